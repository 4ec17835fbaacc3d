import pytest
import torch
from torch_geometric.data import Batch

from gnn_metamf import MatrixGraph
from gnn_metamf.nn import BipartiteOps
from gnn_metamf.nn.ops import PairDot


def _ops(batch, backend):
    return BipartiteOps.from_graph(batch, backend)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_ops_sparse_equals_scatter(graphs, dtype, device):
    batch = Batch.from_data_list(graphs).to(device)
    sparse, scatter = _ops(batch, 'sparse'), _ops(batch, 'scatter')
    gen = torch.Generator().manual_seed(0)
    x_edge = torch.randn(batch.num_entries, 5, generator=gen,
                         dtype=dtype).to(device)
    x_row = torch.randn(batch.num_rows, 5, generator=gen,
                        dtype=dtype).to(device)
    x_col = torch.randn(batch.num_cols, 5, generator=gen,
                        dtype=dtype).to(device)
    w = torch.randn(batch.num_entries, generator=gen, dtype=dtype).to(device)
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


def _orders(graph):
    r"""The same matrix with its entries row by row (as given), column by
    column, and shuffled: the sparse backend sorts only what it must."""
    row, col = graph.edge_index
    by_col = torch.argsort(col * graph.num_rows + row)
    shuffled = torch.randperm(graph.num_entries,
                              generator=torch.Generator().manual_seed(0))
    return {name: MatrixGraph(graph.edge_index[:, perm],
                              graph.edge_value[perm], graph.num_rows,
                              graph.num_cols)
            for name, perm in (('row-major', torch.arange(row.numel())),
                               ('col-major', by_col),
                               ('shuffled', shuffled))}


def _features(graph, width, seed):
    r"""Seeded float64 features of its entries, rows and columns."""
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(n, width, generator=gen, dtype=torch.float64)
                 for n in (graph.num_entries, graph.num_rows,
                           graph.num_cols))


@pytest.mark.parametrize('order', ['row-major', 'col-major', 'shuffled'])
def test_ops_sparse_equals_scatter_in_any_entry_order(graphs, order):
    graph = _orders(graphs[2])[order]
    sparse, scatter = _ops(graph, 'sparse'), _ops(graph, 'scatter')
    x_edge, x_row, x_col = _features(graph, 3, seed=1)
    w = graph.edge_value.double()
    for name in ('row_sum', 'col_sum', 'graph_sum'):
        torch.testing.assert_close(getattr(sparse, name)(x_edge),
                                   getattr(scatter, name)(x_edge))
    torch.testing.assert_close(sparse.rows_from_cols(x_col, w),
                               scatter.rows_from_cols(x_col, w))
    torch.testing.assert_close(sparse.cols_from_rows(x_row, w),
                               scatter.cols_from_rows(x_row, w))
    torch.testing.assert_close(sparse.row_degree, scatter.row_degree)
    torch.testing.assert_close(sparse.col_degree, scatter.col_degree)


def test_ops_gathers_and_pool_equal_scatter_with_gradients(graphs, device):
    batch = Batch.from_data_list(graphs).to(device)
    out = []
    for backend in ('sparse', 'scatter'):
        ops = _ops(batch, backend)
        gen = torch.Generator().manual_seed(2)
        x_row, x_col, x_graph, x_edge = (
            torch.randn(n, 4, generator=gen, dtype=torch.float64).to(
                device).requires_grad_()
            for n in (batch.num_rows, batch.num_cols, batch.num_matrices,
                      batch.num_entries))
        gathered = (ops.gather_row(x_row), ops.gather_col(x_col),
                    ops.gather_graph(x_graph))
        pooled = ops.pool(x_edge)
        loss = sum((t.sin() * (k + 1)).sum()
                   for k, t in enumerate(gathered + pooled))
        loss.backward()
        out.append(gathered + pooled +
                   tuple(t.grad for t in (x_row, x_col, x_graph, x_edge)))
    torch.testing.assert_close(out[0], out[1])
    # The means of pool() are those of the separate methods.
    ops = _ops(batch, 'sparse')
    x = torch.randn(batch.num_entries, 2, dtype=torch.float64).to(device)
    for mean, name in zip(ops.pool(x), ('row_mean', 'col_mean',
                                        'graph_mean')):
        torch.testing.assert_close(mean, getattr(ops, name)(x))


@pytest.mark.parametrize('order', ['sorted', 'shuffled', 'repeated'])
def test_ops_pair_dot_equals_gathered_dot(order, device):
    gen = torch.Generator().manual_seed(3)
    row = torch.randint(7, (40,), generator=gen)
    col = torch.randint(5, (40,), generator=gen)
    if order == 'sorted':
        keep = torch.unique(row * 5 + col)
        row, col = keep // 5, keep % 5
    elif order == 'repeated':  # A pair asked twice is answered twice.
        row, col = torch.cat([row, row[:6]]), torch.cat([col, col[:6]])
    index = torch.stack([row, col]).to(device)
    F = torch.randn(7, 6, generator=gen, dtype=torch.float64).to(device)
    G = torch.randn(5, 6, generator=gen, dtype=torch.float64).to(device)
    expected = (F[index[0]] * G[index[1]]).sum(-1)
    torch.testing.assert_close(PairDot(index, 7, 5)(F, G), expected)
    empty = torch.zeros(2, 0, dtype=torch.long, device=device)
    assert PairDot(empty, 7, 5)(F, G).shape == (0,)


# The CPU kernels chosen by size: scipy's CSR sum (entries grouped), its
# CSC sum (unsorted, small output), PyTorch's CSR sum (unsorted, large
# output, or the kernels switched off), and the tiled weighted product
# (large features). Tiny thresholds make each choice happen on tiny data.
KERNELS = {
    'default': dict(),
    'torch-only': dict(CPU_KERNELS=False),
    'no-scatter-sums': dict(SCATTER_BYTES=0),
    'tiled-products': dict(TILE_BYTES=64),
}


@pytest.mark.parametrize('kernels', list(KERNELS))
@pytest.mark.parametrize('order', ['row-major', 'col-major', 'shuffled'])
def test_ops_cpu_kernels_equal_scatter(graphs, kernels, order, monkeypatch):
    from gnn_metamf.nn import ops as ops_module
    for name, value in KERNELS[kernels].items():
        monkeypatch.setattr(ops_module, name, value)
    graph = Batch.from_data_list([_orders(g)[order] for g in graphs])
    sparse, scatter = _ops(graph, 'sparse'), _ops(graph, 'scatter')
    gen = torch.Generator().manual_seed(4)
    results = []
    for ops in (sparse, scatter):
        x_edge, x_row, x_col = (
            torch.randn(n, 6, generator=gen.manual_seed(k),
                        dtype=torch.float64).requires_grad_()
            for k, n in enumerate((graph.num_entries, graph.num_rows,
                                   graph.num_cols)))
        w = graph.edge_value.double()
        out = (ops.row_sum(x_edge), ops.col_sum(x_edge),
               ops.graph_sum(x_edge), ops.gather_col(x_col),
               ops.rows_from_cols(x_col), ops.rows_from_cols(x_col, w),
               ops.cols_from_rows(x_row, w))
        loss = sum((t.cos() * (k + 1)).sum() for k, t in enumerate(out))
        loss.backward()
        results.append(out + (x_edge.grad, x_row.grad, x_col.grad))
    torch.testing.assert_close(results[0], results[1])
    if kernels == 'tiled-products':  # More than one tile was used.
        by_row = sparse._by_row
        assert len(by_row._tiles(by_row._tile_width(x_col))) > 1
    if kernels == 'default':  # The scipy kernels did the sums.
        kinds = {key[0] for groups in (sparse._by_row, sparse._by_col)
                 for key in groups._cache}
        assert kinds >= {'csr', 'csc'} if order != 'shuffled' else \
            'csc' in kinds


@pytest.mark.parametrize('kernels', ['default', 'torch-only'])
@pytest.mark.parametrize('order', ['row-major', 'shuffled'])
def test_ops_in_cache_order_equals_scatter(graphs, kernels, order,
                                           monkeypatch):
    from gnn_metamf.nn import ops as ops_module
    for name, value in KERNELS[kernels].items():
        monkeypatch.setattr(ops_module, name, value)
    # Tiles of 3 rows and 3 columns (24 bytes per node, 72-byte tiles).
    monkeypatch.setattr(ops_module, 'TILE_BYTES', 72)
    graph = Batch.from_data_list([_orders(g)[order] for g in graphs])
    base = _ops(graph, 'sparse')
    tiled, perm = base.in_cache_order(24)
    assert sorted(perm.tolist()) == list(range(graph.num_entries))
    # Tile order: the (row tile, column tile) of consecutive entries never
    # returns to an earlier one.
    tile = (tiled.row // 3) * 100 + tiled.col // 3
    assert bool((tile[1:] >= tile[:-1]).all())
    torch.testing.assert_close(tiled.row, graph.edge_index[0][perm])
    scatter = _ops(graph, 'scatter')
    x_edge, x_row, x_col = _features(graph, 6, seed=5)
    w = graph.edge_value.double()
    for name in ('row_sum', 'col_sum', 'graph_sum'):
        torch.testing.assert_close(getattr(tiled, name)(x_edge[perm]),
                                   getattr(scatter, name)(x_edge))
    torch.testing.assert_close(tiled.gather_col(x_col),
                               scatter.gather_col(x_col)[perm])
    torch.testing.assert_close(tiled.rows_from_cols(x_col, w[perm]),
                               scatter.rows_from_cols(x_col, w))
    torch.testing.assert_close(tiled.cols_from_rows(x_row, w[perm]),
                               scatter.cols_from_rows(x_row, w))
    torch.testing.assert_close(tiled.row_degree, scatter.row_degree)
    # Small states need no reordering.
    assert base.in_cache_order(1)[1] is None
