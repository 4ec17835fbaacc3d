r"""Memory of meta-training: with ``checkpoint_steps`` the autograd graph
does not grow with the number of refinement steps.

The bytes are counted deterministically, by the storages that autograd
saves for the backward pass (``torch.autograd.graph.saved_tensors_hooks``),
each once and without the parameters. Inside a checkpointed step the
saved tensors are dropped and recomputed in the backward pass, so what
remains per step are its inputs: the two factor matrices, (N + M) x (K + 1)
numbers.
"""
import torch
from torch_geometric.data import Batch

from gnn_metamf.nn import MetaMF

RANK = 4


def _saved_bytes(model, batch, num_steps):
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = max(seen.get(storage.data_ptr(), 0),
                                       storage.nbytes())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss, _ = model.loss(batch, num_steps=num_steps)
    loss.backward()  # The graph is complete and usable.
    return sum(n for key, n in seen.items() if key not in params)


def _batch(graphs):
    graphs = [g.clone() for g in graphs]
    for g in graphs:
        g.edge_value, g.edge_label = g.edge_value.double(), \
            g.edge_label.double()
    return Batch.from_data_list(graphs)


def test_memory_checkpointing_keeps_saved_bytes_flat(graphs, device):
    batch = _batch(graphs).to(device)
    per_step_inputs = (batch.num_rows + batch.num_cols) * (RANK + 1) * 8
    steps = (2, 4, 8)
    saved = {}
    for checkpoint in (False, True):
        torch.manual_seed(0)
        model = MetaMF(rank=RANK, hidden_channels=8, num_layers=2,
                       num_steps=8, checkpoint_steps=checkpoint)
        model = model.double().to(device)
        saved[checkpoint] = [_saved_bytes(model, batch, t) for t in steps]
        # Deterministic: the same count twice.
        assert saved[checkpoint] == [_saved_bytes(model, batch, t)
                                     for t in steps]
    growth = {key: (b[-1] - b[0]) / (steps[-1] - steps[0])
              for key, b in saved.items()}
    # Checkpointed: at most the factors entering each step.
    assert 0 <= growth[True] <= per_step_inputs
    # Plain: every step keeps its Gram matrices, factors and solves.
    assert growth[False] >= 5 * per_step_inputs
    assert saved[True][-1] < saved[False][-1]
