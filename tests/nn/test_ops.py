import pytest
import torch
from torch_geometric.data import Batch

from gnn_metamf.nn import BipartiteOps


def _ops(batch, backend):
    return BipartiteOps.from_graph(batch, backend)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_ops_sparse_equals_scatter(graphs, dtype):
    batch = Batch.from_data_list(graphs)
    sparse, scatter = _ops(batch, 'sparse'), _ops(batch, 'scatter')
    gen = torch.Generator().manual_seed(0)
    x_edge = torch.randn(batch.num_entries, 5, generator=gen, dtype=dtype)
    x_row = torch.randn(batch.num_rows, 5, generator=gen, dtype=dtype)
    x_col = torch.randn(batch.num_cols, 5, generator=gen, dtype=dtype)
    w = torch.randn(batch.num_entries, generator=gen, dtype=dtype)
    for name in ('row_sum', 'col_sum', 'graph_sum', 'row_mean', 'col_mean',
                 'graph_mean'):
        torch.testing.assert_close(getattr(sparse, name)(x_edge),
                                   getattr(scatter, name)(x_edge))
    for weight in (None, w):
        torch.testing.assert_close(sparse.rows_from_cols(x_col, weight),
                                   scatter.rows_from_cols(x_col, weight))
        torch.testing.assert_close(sparse.cols_from_rows(x_row, weight),
                                   scatter.cols_from_rows(x_row, weight))


def test_ops_sparse_gradient_equals_scatter(graphs):
    batch = Batch.from_data_list(graphs)
    grads = []
    for backend in ('sparse', 'scatter'):
        ops = _ops(batch, backend)
        x_col = torch.randn(batch.num_cols, 4,
                            generator=torch.Generator().manual_seed(1),
                            requires_grad=True)
        x_edge = torch.randn(batch.num_entries, 4,
                             generator=torch.Generator().manual_seed(2),
                             requires_grad=True)
        out = ops.rows_from_cols(x_col, batch.edge_value).pow(2).sum()
        out = out + ops.graph_mean(x_edge).pow(2).sum()
        out.backward()
        grads.append((x_col.grad, x_edge.grad))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-4)


def test_ops_statistics_per_matrix(graphs):
    batch = Batch.from_data_list(graphs)
    ops = _ops(batch, 'sparse')
    # Empty last row and column of each matrix (see conftest) have degree 0.
    assert ops.row_degree[batch.rows_per_graph.cumsum(0) - 1].eq(0).all()
    assert ops.col_degree[batch.cols_per_graph.cumsum(0) - 1].eq(0).all()
    expected = torch.tensor([float(g.num_entries) for g in graphs])
    torch.testing.assert_close(ops.graph_entries, expected)
    # The mean over a matrix never mixes matrices of the batch.
    means = ops.graph_mean(batch.edge_value.unsqueeze(-1)).squeeze(-1)
    alone = torch.stack([g.edge_value.mean() for g in graphs])
    torch.testing.assert_close(means, alone)


def test_ops_rejects_unknown_backend(graphs):
    with pytest.raises(ValueError, match="got 'dense'"):
        _ops(graphs[0], 'dense')
