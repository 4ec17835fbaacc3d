import pytest
import torch
from torch_geometric.data import Batch

import gnn_metamf.nn.conv as conv
from gnn_metamf.nn import BipartiteOps, Encoder


@pytest.mark.parametrize('layer', [
    'exchangeable', 'node', ['node', 'exchangeable'],
    ['exchangeable', 'node', 'exchangeable']])
def test_encoder_fast_path_equals_autograd_path(graphs, layer, device,
                                                monkeypatch):
    r"""Without autograd the encoder fuses the embedding into the first
    exchangeable layer and lets layers overwrite its entry states; with
    autograd, and with the reference backend, it runs every layer plainly.
    All give the same representations."""
    monkeypatch.setattr(conv, '_BLOCK_BYTES', 256)
    torch.manual_seed(0)
    encoder = Encoder(hidden_channels=6, num_layers=3,
                      layer=layer).double().to(device)
    batch = Batch.from_data_list(graphs).to(device)
    z = (batch.edge_value - 3).double()
    expected = encoder(z, BipartiteOps.from_graph(batch))
    with torch.no_grad():
        for backend in ('sparse', 'scatter'):
            out = encoder(z, BipartiteOps.from_graph(batch, backend))
            for got, want in zip(out, expected):
                torch.testing.assert_close(got, want.detach())
