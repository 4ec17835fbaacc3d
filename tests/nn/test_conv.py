import pytest
import torch
from torch_geometric.data import Batch

import gnn_metamf.nn.conv as conv
from gnn_metamf import MatrixGraph
from gnn_metamf.nn import (
    LAYERS,
    BipartiteOps,
    ExchangeableLayer,
    MetaMF,
    NodeMessageLayer,
    RowColLayer,
    make_layer,
    register_layer,
)

CHANNELS = 6


def _states(graph, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(graph.num_rows, CHANNELS, generator=gen),
            torch.randn(graph.num_cols, CHANNELS, generator=gen),
            torch.randn(graph.num_entries, CHANNELS, generator=gen))


def _permuted(graph, row_perm, col_perm, edge_perm):
    r"""The same matrix with row ``i`` moved to ``row_perm[i]``, column ``j``
    to ``col_perm[j]`` and the entries listed in another order."""
    index = torch.stack([row_perm[graph.edge_index[0]],
                         col_perm[graph.edge_index[1]]])[:, edge_perm]
    return MatrixGraph(index, graph.edge_value[edge_perm], graph.num_rows,
                       graph.num_cols)


@pytest.mark.parametrize('backend', ['sparse', 'scatter'])
@pytest.mark.parametrize('layer_cls', [ExchangeableLayer, NodeMessageLayer])
def test_layer_permutation_equivariance(graphs, layer_cls, backend):
    torch.manual_seed(0)
    layer = layer_cls(CHANNELS)
    graph = graphs[2]
    x_row, x_col, x_edge = _states(graph)
    gen = torch.Generator().manual_seed(3)
    row_perm = torch.randperm(graph.num_rows, generator=gen)
    col_perm = torch.randperm(graph.num_cols, generator=gen)
    edge_perm = torch.randperm(graph.num_entries, generator=gen)
    other = _permuted(graph, row_perm, col_perm, edge_perm)

    out = layer(x_row, x_col, x_edge, BipartiteOps.from_graph(graph, backend))
    # Permuted inputs: new row row_perm[i] carries old row i's state.
    p_row = torch.empty_like(x_row)
    p_row[row_perm] = x_row
    p_col = torch.empty_like(x_col)
    p_col[col_perm] = x_col
    p_out = layer(p_row, p_col, x_edge[edge_perm],
                  BipartiteOps.from_graph(other, backend))
    torch.testing.assert_close(p_out[0][row_perm], out[0])
    torch.testing.assert_close(p_out[1][col_perm], out[1])
    torch.testing.assert_close(p_out[2], out[2][edge_perm])


@pytest.mark.parametrize('layer_cls', [ExchangeableLayer, NodeMessageLayer])
def test_layer_batch_equals_alone(graphs, layer_cls):
    torch.manual_seed(0)
    layer = layer_cls(CHANNELS)
    batch = Batch.from_data_list(graphs)
    states = [_states(g, seed=i) for i, g in enumerate(graphs)]
    out = layer(*(torch.cat(s) for s in zip(*states)),
                BipartiteOps.from_graph(batch))
    alone = [layer(*s, BipartiteOps.from_graph(g))
             for s, g in zip(states, graphs)]
    for k in range(3):
        torch.testing.assert_close(out[k], torch.cat([a[k] for a in alone]))


def test_layer_registry_and_errors():
    assert {'exchangeable', 'node'} <= set(LAYERS)
    assert isinstance(make_layer('node', 4), NodeMessageLayer)
    assert repr(make_layer(ExchangeableLayer, 4)) == 'ExchangeableLayer(4)'
    with pytest.raises(ValueError, match="unknown layer 'gat'"):
        make_layer('gat', 4)
    with pytest.raises(TypeError, match='RowColLayer subclass'):
        register_layer('bad')(int)


class RowMaxLayer(RowColLayer):
    r"""A layer written outside the library: each entry adds the maximum
    of its row (a permutation-equivariant pooling the library lacks)."""
    def __init__(self, channels):
        super().__init__(channels)
        self.lin = torch.nn.Linear(channels, channels)

    def reset_parameters(self):
        self.lin.reset_parameters()

    def forward(self, x_row, x_col, x_edge, ops):
        row_max = x_edge.new_full((ops.num_rows, x_edge.size(1)), -1e4)
        row_max = row_max.scatter_reduce(
            0, ops.row.unsqueeze(-1).expand_as(x_edge), x_edge, 'amax')
        return x_row, x_col, x_edge + torch.tanh(self.lin(row_max[ops.row]))


def test_custom_layer_plugs_into_model(graphs):
    register_layer('row_max')(RowMaxLayer)
    try:
        batch = Batch.from_data_list(graphs)
        for layer in ('row_max', RowMaxLayer, ['row_max', 'exchangeable']):
            torch.manual_seed(0)
            model = MetaMF(rank=4, hidden_channels=CHANNELS, num_layers=2,
                           layer=layer, num_steps=2)
            assert any(isinstance(m, RowMaxLayer) for m in model.modules())
            loss, _ = model.loss(batch)
            loss.backward()
            lin = next(m for m in model.modules()
                       if isinstance(m, RowMaxLayer)).lin
            assert lin.weight.grad.abs().sum() > 0
    finally:
        LAYERS.pop('row_max')


@pytest.mark.parametrize('block', [64, 1 << 19])
def test_exchangeable_fast_path_equals_autograd_path(graphs, block, device,
                                                     monkeypatch):
    r"""Without autograd the layer updates the entries in cache-sized
    blocks (several here with a tiny block), optionally in place; the
    results are those of the plain path that autograd uses."""
    monkeypatch.setattr(conv, '_BLOCK_BYTES', block)
    torch.manual_seed(0)
    layer = ExchangeableLayer(CHANNELS).double().to(device)
    batch = Batch.from_data_list(graphs).to(device)
    ops = BipartiteOps.from_graph(batch)
    x_row, x_col, x_edge = (t.double().to(device) for t in _states(batch))
    expected = layer(x_row, x_col, x_edge, ops)
    with torch.no_grad():
        fast = layer(x_row, x_col, x_edge, ops)
        copy = x_edge.clone()
        inplace = layer(x_row, x_col, copy, ops, inplace=True)
    for k in range(3):
        torch.testing.assert_close(fast[k], expected[k].detach())
    torch.testing.assert_close(inplace[2], expected[2].detach())
    assert inplace[2] is copy  # Overwritten, as asked.


def test_exchangeable_fused_embedding_equals_layer_of_embedding(graphs,
                                                               device,
                                                               monkeypatch):
    monkeypatch.setattr(conv, '_BLOCK_BYTES', 64)
    torch.manual_seed(0)
    layer = ExchangeableLayer(CHANNELS).double().to(device)
    embed = torch.nn.Linear(1, CHANNELS).double().to(device)
    batch = Batch.from_data_list(graphs).to(device)
    ops = BipartiteOps.from_graph(batch)
    z = (batch.edge_value - 3).double()
    zeros = (torch.zeros(n, CHANNELS, dtype=torch.float64, device=device)
             for n in (batch.num_rows, batch.num_cols))
    expected = layer(*zeros, embed(z.unsqueeze(-1)), ops)[2]
    torch.testing.assert_close(layer.forward_embedded(z, embed, ops),
                               expected.detach())
