import re

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
import torch_geometric.transforms as T
from torch_geometric.data import Batch, Data, HeteroData
from torch_geometric.loader import DataLoader

from gnn_metamf.data import DUPLICATE_POLICIES, MatrixGraph

NAN = float('nan')


def small_graph():
    r"""A 3 x 5 matrix with an empty last column, two query entries and
    keys on both sides::

        .   1   .   2   .
        3   .   .   .   .
        .   .  4.5  .   .
    """
    graph = MatrixGraph.from_triples([0, 1, 2, 0], [1, 0, 2, 3],
                                     [1.0, 3.0, 4.5, 2.0], num_rows=3,
                                     num_cols=5)
    graph.edge_label_index = torch.tensor([[1, 2], [4, 0]])
    graph.edge_label = torch.tensor([-1.0, -2.0])
    graph.row_keys = ['r0', 'r1', 'r2']
    graph.col_keys = ['c0', 'c1', 'c2', 'c3', 'c4']
    return graph


def random_graph(num_rows, num_cols, density=0.5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(num_rows, num_cols, generator=gen) < density
    value = torch.randn(num_rows, num_cols, generator=gen)
    return MatrixGraph.from_dense(value, mask)


def ragged_graphs():
    r"""Three matrices of different sizes for batching: a 3 x 4 one whose
    last row and column are empty, a 1 x 2 one with a single entry, and a
    2 x 3 one without query entries."""
    g0 = MatrixGraph(torch.tensor([[0, 1, 0], [0, 2, 1]]),
                     torch.tensor([1.0, 2.0, 3.0]), num_rows=3, num_cols=4,
                     edge_label_index=torch.tensor([[1], [1]]),
                     edge_label=torch.tensor([4.0]),
                     row_keys=['a', 'b', 'c'])
    g1 = MatrixGraph(torch.tensor([[0], [1]]), torch.tensor([5.0]),
                     num_rows=1, num_cols=2,
                     edge_label_index=torch.tensor([[0], [0]]),
                     edge_label=torch.tensor([6.0]), row_keys=['d'])
    g2 = MatrixGraph(torch.tensor([[1, 0], [0, 2]]), torch.tensor([7.0, 8.0]),
                     num_rows=2, num_cols=3,
                     edge_label_index=torch.empty(2, 0, dtype=torch.long),
                     edge_label=torch.empty(0), row_keys=['e', 'f'])
    return [g0, g1, g2]


def batch_with_loader(graphs):
    return next(iter(DataLoader(graphs, batch_size=len(graphs))))


@pytest.fixture
def float64_default():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


# ----------------------------------------------------------------------
# Round trips.

def test_from_triples_round_trip():
    row, col = [2, 0, 1, 0], [1, 3, 0, 0]
    value = [0.5, -1.0, 0.0, 7.25]
    graph = MatrixGraph.from_triples(row, col, value, num_rows=4, num_cols=5)

    assert (graph.num_rows, graph.num_cols) == (4, 5)
    assert graph.num_entries == 4
    out_row, out_col, out_value = graph.to_triples()
    assert out_row.tolist() == row
    assert out_col.tolist() == col
    assert out_value.tolist() == value


def test_from_triples_infers_sizes():
    graph = MatrixGraph.from_triples([0, 2], [3, 1], [1.0, 2.0])
    assert (graph.num_rows, graph.num_cols) == (3, 4)
    empty = MatrixGraph.from_triples(torch.empty(0, dtype=torch.long),
                                     torch.empty(0, dtype=torch.long),
                                     torch.empty(0))
    assert (empty.num_rows, empty.num_cols, empty.num_entries) == (0, 0, 0)


def test_from_triples_round_trip_random():
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        num_rows, num_cols = torch.randint(1, 9, (2,), generator=gen).tolist()
        key = torch.randperm(num_rows * num_cols, generator=gen)
        key = key[:max(1, key.numel() // 2)]
        row, col = key // num_cols, key % num_cols
        value = torch.randn(key.numel(), generator=gen)
        graph = MatrixGraph.from_triples(row, col, value, num_rows, num_cols)

        for out, expected in zip(graph.to_triples(), (row, col, value)):
            assert torch.equal(out, expected)
        dense = graph.to_dense()
        assert torch.equal(dense[row, col], value)
        assert int((~dense.isnan()).sum()) == key.numel()


def test_from_dense_with_mask_round_trip():
    matrix = np.array([[1.0, 9.0, 0.0], [9.0, 2.0, 9.0]])
    mask = np.array([[True, False, True], [False, True, False]])
    graph = MatrixGraph.from_dense(matrix, mask)

    assert (graph.num_rows, graph.num_cols, graph.num_entries) == (2, 3, 3)
    assert graph.edge_index.tolist() == [[0, 0, 1], [0, 2, 1]]
    assert graph.edge_value.tolist() == [1.0, 0.0, 2.0]  # Zero is observed.
    expected = torch.tensor([[1.0, NAN, 0.0], [NAN, 2.0, NAN]],
                            dtype=torch.float64)
    torch.testing.assert_close(graph.to_dense(), expected, equal_nan=True)
    assert graph.to_dense(fill_value=-5.0).tolist() == [[1.0, -5.0, 0.0],
                                                        [-5.0, 2.0, -5.0]]


def test_from_dense_with_nan_round_trip():
    matrix = torch.tensor([[NAN, 1.0, NAN, NAN],
                           [2.0, NAN, 3.0, NAN],
                           [NAN, NAN, NAN, NAN]])
    graph = MatrixGraph.from_dense(matrix)

    assert (graph.num_rows, graph.num_cols) == (3, 4)  # Empty row, column.
    assert graph.edge_index.tolist() == [[0, 1, 1], [1, 0, 2]]
    torch.testing.assert_close(graph.to_dense(), matrix, equal_nan=True)


def test_from_dense_agrees_with_from_triples():
    graph = random_graph(6, 4, seed=3)
    again = MatrixGraph.from_dense(graph.to_dense())
    assert torch.equal(again.edge_index, graph.edge_index)
    assert torch.equal(again.edge_value, graph.edge_value)
    again = MatrixGraph.from_triples(*graph.to_triples(), num_rows=6,
                                     num_cols=4)
    assert torch.equal(again.edge_index, graph.edge_index)


@pytest.mark.parametrize('fmt', [sp.coo_matrix, sp.csr_matrix, sp.csc_matrix,
                                 sp.coo_array, sp.csr_array],
                         ids=lambda fmt: fmt.__name__)
def test_from_scipy_round_trip(fmt):
    dense = np.array([[0.0, 1.5, 0.0, 0.0],
                      [2.0, 0.0, 0.0, 0.0],
                      [0.0, 0.0, 0.0, 0.0]])
    matrix = fmt(dense)
    graph = MatrixGraph.from_scipy(matrix)

    assert (graph.num_rows, graph.num_cols) == (3, 4)
    assert sorted(zip(*(t.tolist() for t in graph.to_triples()))) == [
        (0, 1, 1.5), (1, 0, 2.0)]
    out = graph.to_scipy()
    assert sp.issparse(out)
    assert out.shape == (3, 4) and out.nnz == 2
    assert np.array_equal(out.toarray(), dense)
    assert MatrixGraph.from_scipy(out).to_triples()[2].tolist() == [1.5, 2.0]


def test_from_scipy_keeps_explicit_zeros_and_sums_duplicates():
    row, col = np.array([1, 0, 1, 2]), np.array([0, 0, 0, 1])
    data = np.array([1.0, 0.0, 3.0, 5.0])
    matrix = sp.coo_matrix((data, (row, col)), shape=(3, 3))
    graph = MatrixGraph.from_scipy(matrix)

    assert graph.edge_index.tolist() == [[0, 1, 2], [0, 0, 1]]
    assert graph.edge_value.tolist() == [0.0, 4.0, 5.0]
    # The caller's matrix is left as it was.
    assert matrix.row.tolist() == [1, 0, 1, 2]
    assert matrix.data.tolist() == [1.0, 0.0, 3.0, 5.0]


@pytest.mark.parametrize('rows,row_keys', [
    (['bob', 'alice', 'bob', 'carol'], ['alice', 'bob', 'carol']),
    ([10, -3, 7, 10], [-3, 7, 10]),
    (['a', 1, (2, 3), 'a'], ['a', 1, (2, 3)]),
    ([(1, 2), (0, 5), (1, 2), (3, 0)], [(0, 5), (1, 2), (3, 0)]),
], ids=['strings', 'ints', 'unsortable', 'tuples'])
def test_from_pandas_round_trip(rows, row_keys):
    frame = pd.DataFrame({'row': rows, 'col': ['x', 'y', 'y', 'y'],
                          'value': [1, 2, 3, 4]})
    graph = MatrixGraph.from_pandas(frame)

    assert graph.row_keys == row_keys
    assert [type(k) for k in graph.row_keys] == [type(k) for k in row_keys]
    assert graph.col_keys == ['x', 'y']
    assert (graph.num_rows, graph.num_cols) == (len(row_keys), 2)
    for i, key in zip(graph.edge_index[0].tolist(), rows):
        assert graph.row_keys[i] == key
    out = graph.to_pandas()
    assert list(out.columns) == ['row', 'col', 'value']
    assert out['row'].tolist() == rows
    assert out['col'].tolist() == frame['col'].tolist()
    assert out['value'].tolist() == [1.0, 2.0, 3.0, 4.0]


def test_from_pandas_column_names():
    frame = pd.DataFrame({'user': [3, 1], 'item': ['b', 'a'],
                          'rating': [4.5, 1.0], 'other': [0, 0]})
    graph = MatrixGraph.from_pandas(frame, row='user', col='item',
                                    value='rating')
    assert graph.edge_index.tolist() == [[1, 0], [1, 0]]

    out = graph.to_pandas(row='user', col='item', value='rating')
    pd.testing.assert_frame_equal(out, frame[['user', 'item', 'rating']],
                                  check_dtype=False)


def test_to_pandas_without_keys_gives_ids():
    graph = MatrixGraph.from_triples([1, 0], [0, 2], [5.0, 6.0])
    out = graph.to_pandas()
    assert out['row'].tolist() == [1, 0]
    assert out['col'].tolist() == [0, 2]
    assert out['value'].tolist() == [5.0, 6.0]


def movielens_like():
    r"""Laid out like PyG's ``MovieLens100K``: 3 users, 5 movies (the last
    never rated), training ratings on both directions, test edges on the
    forward one."""
    data = HeteroData()
    data['user'].x = torch.randn(3, 4)
    data['movie'].x = torch.randn(5, 2)
    edge_index = torch.tensor([[0, 1, 2, 0], [1, 3, 0, 2]])
    rating = torch.tensor([5, 3, 4, 1])
    time = torch.tensor([100, 200, 300, 400])
    forward = data['user', 'rates', 'movie']
    forward.edge_index, forward.rating, forward.time = edge_index, rating, time
    reverse = data['movie', 'rated_by', 'user']
    reverse.edge_index = edge_index.flip([0])
    reverse.rating, reverse.time = rating, time
    forward.edge_label_index = torch.tensor([[1, 2], [0, 3]])
    forward.edge_label = torch.tensor([2.0, 5.0])
    return data


def igmc_like():
    r"""Laid out like PyG's ``IGMCDataset`` after ``ToUndirected``."""
    data = HeteroData()
    data['user'].x = torch.eye(2)
    data['movie'].x = torch.randn(3, 2)
    data['user', 'rates', 'movie'].edge_index = torch.tensor([[0, 1, 1],
                                                              [2, 0, 1]])
    data['user', 'rates', 'movie'].rating = torch.tensor([1.0, 2.0, 3.0])
    data['user', 'rates', 'movie'].edge_label_index = torch.tensor([[0],
                                                                    [0]])
    data['user', 'rates', 'movie'].edge_label = torch.tensor([4.0])
    return T.ToUndirected()(data)


def test_from_hetero_movielens_layout():
    data = movielens_like()
    graph = MatrixGraph.from_hetero(data)

    assert (graph.num_rows, graph.num_cols) == (3, 5)
    assert graph.edge_index.tolist() == [[0, 1, 2, 0], [1, 3, 0, 2]]
    assert graph.edge_value.dtype == torch.get_default_dtype()
    assert graph.edge_value.tolist() == [5.0, 3.0, 4.0, 1.0]
    assert graph.edge_label_index.tolist() == [[1, 2], [0, 3]]
    assert graph.edge_label.tolist() == [2.0, 5.0]
    assert 'time' not in graph


def test_from_hetero_igmc_layout():
    data = igmc_like()
    assert ('movie', 'rev_rates', 'user') in data.edge_types
    graph = MatrixGraph.from_hetero(data)

    assert (graph.num_rows, graph.num_cols) == (2, 3)
    assert graph.edge_index.tolist() == [[0, 1, 1], [2, 0, 1]]
    assert graph.edge_value.tolist() == [1.0, 2.0, 3.0]
    assert graph.edge_label_index.tolist() == [[0], [0]]
    assert graph.edge_label.tolist() == [4.0]


def test_from_hetero_explicit_edge_type():
    data = igmc_like()
    graph = MatrixGraph.from_hetero(data, ('movie', 'rev_rates', 'user'))
    assert (graph.num_rows, graph.num_cols) == (3, 2)
    assert graph.edge_index.tolist() == [[2, 0, 1], [0, 1, 1]]
    assert graph.get('edge_label_index') is None

    data = movielens_like()
    data['user', 'rates', 'movie'].score = torch.tensor([1, 2, 3, 4])
    graph = MatrixGraph.from_hetero(data, ('user', 'rates', 'movie'),
                                    value_key='score')
    assert graph.edge_value.tolist() == [1.0, 2.0, 3.0, 4.0]


def test_from_hetero_errors():
    data = movielens_like()
    data['user', 'tags', 'movie'].edge_index = torch.tensor([[0], [0]])
    data['user', 'tags', 'movie'].rating = torch.tensor([1.0])
    with pytest.raises(ValueError, match='cannot tell which edge type'):
        MatrixGraph.from_hetero(data)
    graph = MatrixGraph.from_hetero(data, ('user', 'tags', 'movie'))
    assert graph.edge_value.tolist() == [1.0]

    with pytest.raises(ValueError, match='cannot tell which edge type'):
        MatrixGraph.from_hetero(movielens_like(), value_key='score')
    with pytest.raises(ValueError, match="has no attribute 'score'"):
        MatrixGraph.from_hetero(movielens_like(), ('user', 'rates', 'movie'),
                                value_key='score')
    with pytest.raises(ValueError, match='not in the graph'):
        MatrixGraph.from_hetero(movielens_like(), ('user', 'likes', 'movie'))
    with pytest.raises(ValueError, match='expected a HeteroData, got Data'):
        MatrixGraph.from_hetero(Data())


# ----------------------------------------------------------------------
# Batching.

@pytest.mark.parametrize('make_batch', [Batch.from_data_list,
                                        batch_with_loader],
                         ids=['from_data_list', 'loader'])
def test_batch_offsets_rows_and_cols_separately(make_batch):
    batch = make_batch(ragged_graphs())

    # Rows start at 0, 3, 4 and columns at 0, 4, 6.
    assert batch.edge_index.tolist() == [[0, 1, 0, 3, 5, 4],
                                         [0, 2, 1, 5, 6, 8]]
    assert batch.edge_value.tolist() == [1.0, 2.0, 3.0, 5.0, 7.0, 8.0]
    assert batch.edge_label_index.tolist() == [[1, 3], [1, 4]]
    assert batch.edge_label.tolist() == [4.0, 6.0]
    assert (batch.num_rows, batch.num_cols) == (6, 9)
    assert batch.num_matrices == 3
    assert batch.num_entries == 6
    assert batch.rows_per_graph.tolist() == [3, 1, 2]
    assert batch.cols_per_graph.tolist() == [4, 2, 3]
    assert batch.row_batch.tolist() == [0, 0, 0, 1, 2, 2]
    assert batch.col_batch.tolist() == [0, 0, 0, 0, 1, 1, 2, 2, 2]
    assert batch.validate_matrix() is batch


@pytest.mark.parametrize('make_batch', [Batch.from_data_list,
                                        batch_with_loader],
                         ids=['from_data_list', 'loader'])
def test_batch_to_data_list_gives_back_originals(make_batch):
    graphs = ragged_graphs()
    parts = make_batch(graphs).to_data_list()

    assert len(parts) == len(graphs)
    for part, graph in zip(parts, graphs):
        for key in ('edge_index', 'edge_value', 'edge_label_index',
                    'edge_label'):
            assert part[key].dtype == graph[key].dtype
            assert torch.equal(part[key], graph[key])
        assert (part.num_rows, part.num_cols) == (graph.num_rows,
                                                  graph.num_cols)
        assert part.num_matrices == 1
        assert part.row_keys == graph.row_keys
        assert repr(part) == repr(graph)


def test_batch_dense_is_block_diagonal():
    graphs = ragged_graphs()
    batch = Batch.from_data_list(graphs)

    expected = torch.block_diag(*(g.to_dense(0.0) for g in graphs))
    assert torch.equal(batch.to_dense(fill_value=0.0), expected)
    # NaN where no entry is observed, inside and outside the blocks.
    observed = torch.block_diag(*((~g.to_dense().isnan()).float()
                                  for g in graphs))
    assert torch.equal(~batch.to_dense().isnan(), observed.bool())


def test_batch_loader_ragged_last_batch():
    graphs = ragged_graphs()
    first, last = list(DataLoader(graphs, batch_size=2))
    assert first.rows_per_graph.tolist() == [3, 1]
    assert first.edge_index.tolist() == [[0, 1, 0, 3], [0, 2, 1, 5]]
    assert last.rows_per_graph.tolist() == [2]
    assert torch.equal(last.edge_index, graphs[2].edge_index)
    assert last.edge_label_index.shape == (2, 0)


def test_batch_of_random_graphs_matches_offsets():
    graphs = [random_graph(r, c, seed=s)
              for s, (r, c) in enumerate([(4, 7), (6, 2), (1, 5)])]
    batch = Batch.from_data_list(graphs)
    row_start = torch.tensor([0, 4, 10])
    col_start = torch.tensor([0, 7, 9])

    expected = torch.cat([g.edge_index + torch.stack([r, c]).view(2, 1)
                          for g, r, c in zip(graphs, row_start, col_start)],
                         dim=1)
    assert torch.equal(batch.edge_index, expected)
    assert torch.equal(batch.row_batch[batch.edge_index[0]],
                       batch.col_batch[batch.edge_index[1]])


# ----------------------------------------------------------------------
# Sub-matrices.

def test_subgraph_entries_and_reindexing():
    graph = small_graph()
    rows, cols = torch.tensor([2, 0]), torch.tensor([2, 1, 4])
    sub = graph.subgraph(rows, cols)

    assert (sub.num_rows, sub.num_cols) == (2, 3)
    # (0, 1) = 1.0 becomes (1, 1); (2, 2) = 4.5 becomes (0, 0).
    assert sub.edge_index.tolist() == [[1, 0], [1, 0]]
    assert sub.edge_value.tolist() == [1.0, 4.5]
    torch.testing.assert_close(sub.to_dense(),
                               graph.to_dense()[rows][:, cols],
                               equal_nan=True)
    # Query (1, 4) is dropped with row 1; (2, 0) with column 0.
    assert sub.edge_label_index.shape == (2, 0)
    assert sub.edge_label.shape == (0,)
    assert sub.row_keys == ['r2', 'r0']
    assert sub.col_keys == ['c2', 'c1', 'c4']
    assert sub.row_id.tolist() == [2, 0]
    assert sub.col_id.tolist() == [2, 1, 4]


def test_subgraph_keeps_query_inside():
    graph = small_graph()
    sub = graph.subgraph(torch.tensor([1, 2]), torch.tensor([4, 0]))
    assert sub.edge_index.tolist() == [[0], [1]]
    assert sub.edge_label_index.tolist() == [[0, 1], [0, 1]]
    assert sub.edge_label.tolist() == [-1.0, -2.0]


def test_subgraph_of_subgraph_maps_to_original_ids():
    graph = random_graph(6, 5, seed=1)
    sub = graph.subgraph(torch.tensor([5, 1, 3, 0]), torch.tensor([4, 2, 0]))
    subsub = sub.subgraph(torch.tensor([2, 0]), torch.tensor([1, 2]))

    assert subsub.row_id.tolist() == [3, 5]
    assert subsub.col_id.tolist() == [2, 0]
    torch.testing.assert_close(
        subsub.to_dense(),
        graph.to_dense()[subsub.row_id][:, subsub.col_id], equal_nan=True)


def test_subgraph_permutation_keeps_entries():
    graph = random_graph(5, 6, seed=4)
    gen = torch.Generator().manual_seed(0)
    rows = torch.randperm(5, generator=gen)
    cols = torch.randperm(6, generator=gen)
    sub = graph.subgraph(rows, cols)
    assert sub.num_entries == graph.num_entries
    torch.testing.assert_close(sub.to_dense(), graph.to_dense()[rows][:, cols],
                               equal_nan=True)


@pytest.mark.parametrize('rows,cols,match', [
    ([3], [0], r"'rows' has row id 3, expected ids in \[0, 3\)"),
    ([0], [5], r"'cols' has column id 5, expected ids in \[0, 5\)"),
    ([-1], [0], "'rows' has row id -1"),
    ([0, 1, 0], [0], "'rows' must not repeat an id, got 1 repeat"),
    ([0], [2, 2, 2], "'cols' must not repeat an id, got 2 repeat"),
    (torch.tensor([0.0]), [0], "'rows' must hold integer ids, got dtype "
                               "torch.float32"),
    ([0], [[0]], "'cols' must have 1 dimension, got 2"),
], ids=['row-range', 'col-range', 'negative', 'repeat-row', 'repeat-col',
        'float', 'two-dims'])
def test_subgraph_errors(rows, cols, match):
    with pytest.raises(ValueError, match=match):
        small_graph().subgraph(rows, cols)


# ----------------------------------------------------------------------
# Validation.

def make(edge_index, edge_value=None, **kwargs):
    if edge_value is None:
        edge_value = torch.ones(torch.as_tensor(edge_index).size(-1))
    return MatrixGraph(torch.as_tensor(edge_index), edge_value, **kwargs)


@pytest.mark.parametrize('build,match', [
    (lambda: make([[0, 2], [0, 1]], num_rows=2, num_cols=2),
     r"'edge_index' has row id 2, expected ids in \[0, 2\) for 2 rows"),
    (lambda: make([[0, 1], [3, 1]], num_rows=2, num_cols=3),
     r"'edge_index' has column id 3, expected ids in \[0, 3\) for 3 "
     r"columns"),
    (lambda: make([[0, -1], [0, 1]]), "'edge_index' has row id -1"),
    (lambda: make([[0, 1], [0, -2]]), "'edge_index' has column id -2"),
    (lambda: make([[0], [0]], edge_label_index=torch.tensor([[0], [4]]),
                  num_rows=1, num_cols=2),
     "'edge_label_index' has column id 4"),
    (lambda: MatrixGraph.from_triples([0, 3], [0, 0], [1.0, 2.0],
                                      num_rows=3),
     "'row/col ids' has row id 3"),
    (lambda: MatrixGraph.from_triples([0, 0], [0, -1], [1.0, 2.0]),
     "'row/col ids' has column id -1"),
], ids=['row', 'col', 'negative-row', 'negative-col', 'query', 'triples-row',
        'triples-negative-col'])
def test_validate_ids_out_of_range(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize('size,shown', [
    (-1, '-1'), (2.5, '2.5'), (True, 'True'), ('3', "'3'"),
    (np.float64(3.0), 'np.float64(3.0)'), (torch.tensor([2, 3]), 'tensor'),
], ids=['negative', 'float', 'bool', 'str', 'numpy-float', 'tensor'])
@pytest.mark.parametrize('side', ['num_rows', 'num_cols'])
def test_validate_sizes(size, shown, side):
    match = f"'{side}' must be a non-negative integer, got {re.escape(shown)}"
    with pytest.raises(ValueError, match=match):
        MatrixGraph.from_triples([0], [0], [1.0], **{side: size})
    with pytest.raises(ValueError, match=match):
        make([[0], [0]], **{side: size})


def test_validate_sizes_accept_integer_types():
    graph = MatrixGraph.from_triples([0], [0], [1.0], num_rows=np.int32(4),
                                     num_cols=torch.tensor(2))
    assert (graph.num_rows, graph.num_cols) == (4, 2)
    assert type(graph.num_rows) is int
    assert (make([[0], [0]], num_rows=0 + 1, num_cols=1).num_nodes) == 2


@pytest.mark.parametrize('build,match', [
    (lambda: MatrixGraph.from_triples([0, 1, 2], [0, 1], [1.0, 2.0]),
     "'row' and 'col' must have the same length, got 3 and 2"),
    (lambda: MatrixGraph.from_triples([0, 1], [0, 1], [1.0, 2.0, 3.0]),
     r"'value' must have shape \(2,\), got \(3,\)"),
    (lambda: make([[0, 1, 2], [0, 1, 2]], torch.ones(2)),
     r"'edge_value' must have shape \(3,\), got \(2,\)"),
    (lambda: make([[0], [0]], edge_label_index=torch.tensor([[0], [0]]),
                  edge_label=torch.ones(2)),
     r"'edge_label' must have shape \(1,\), got \(2,\)"),
], ids=['row-col', 'value', 'edge_value', 'edge_label'])
def test_validate_lengths(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize('value,match', [
    ([1.0, NAN, float('inf'), 2.0],
     r"got 2 NaN or infinite value\(s\), the first at position 1 \(nan\)"),
    ([1.0, 2.0, 3.0, -float('inf')],
     r"got 1 NaN or infinite value\(s\), the first at position 3 \(-inf\)"),
], ids=['nan', 'inf'])
def test_validate_non_finite_values(value, match):
    with pytest.raises(ValueError, match="'value' must be finite, " + match):
        MatrixGraph.from_triples([0, 1, 2, 3], [0, 0, 0, 0], value)
    with pytest.raises(ValueError, match="'edge_value' must be finite"):
        make([[0, 1, 2, 3], [0, 0, 0, 0]], torch.tensor(value))
    with pytest.raises(ValueError, match="'edge_label' must be finite"):
        make([[0], [0]], edge_label_index=torch.zeros(2, 4),
             edge_label=torch.tensor(value))


def duplicated_triples():
    r"""(0, 1) given twice (1, 3), (1, 0) twice (2, 6), (2, 2) once (4); in
    order of first appearance (0, 1), (1, 0), (2, 2)."""
    return [0, 1, 0, 2, 1], [1, 0, 1, 2, 0], [1.0, 2.0, 3.0, 4.0, 6.0]


def test_duplicates_error_by_default():
    match = (r"'row/col ids' has 2 duplicate entr\(ies\), the first at "
             r"\(row 0, column 1\); pass duplicates=")
    with pytest.raises(ValueError, match=match):
        MatrixGraph.from_triples(*duplicated_triples())
    with pytest.raises(ValueError, match=r"'edge_index' has 1 duplicate "
                                         r"entr\(ies\), the first at "
                                         r"\(row 1, column 2\)"):
        make([[1, 0, 1], [2, 0, 2]])


@pytest.mark.parametrize('policy,values', [
    ('mean', [2.0, 4.0, 4.0]),
    ('sum', [4.0, 8.0, 4.0]),
    ('first', [1.0, 2.0, 4.0]),
    ('last', [3.0, 6.0, 4.0]),
])
def test_duplicates_policies(policy, values):
    graph = MatrixGraph.from_triples(*duplicated_triples(), duplicates=policy)
    assert graph.edge_index.tolist() == [[0, 1, 2], [1, 0, 2]]
    assert graph.edge_value.tolist() == values
    assert graph.num_entries == 3


@pytest.mark.parametrize('policy', DUPLICATE_POLICIES)
def test_duplicates_policies_keep_unique_entries(policy):
    row, col, value = [2, 0, 1], [0, 3, 3], [1.0, 2.0, 3.0]
    graph = MatrixGraph.from_triples(row, col, value, duplicates=policy)
    assert graph.to_triples()[0].tolist() == row
    assert graph.to_triples()[2].tolist() == value


def test_duplicates_unknown_policy():
    with pytest.raises(ValueError, match="'duplicates' must be one of .*"
                                         "got 'max'"):
        MatrixGraph.from_triples([0], [0], [1.0], duplicates='max')


def test_duplicates_in_pandas():
    frame = pd.DataFrame({'row': ['a', 'b', 'a'], 'col': [1, 1, 1],
                          'value': [1.0, 5.0, 2.0]})
    with pytest.raises(ValueError, match='duplicate'):
        MatrixGraph.from_pandas(frame)
    graph = MatrixGraph.from_pandas(frame, duplicates='mean')
    assert graph.to_pandas()['value'].tolist() == [1.5, 5.0]


@pytest.mark.parametrize('build,match', [
    (lambda: make(torch.zeros(3, 4, dtype=torch.long)),
     r"'edge_index' must have shape \(2, E\), got \(3, 4\)"),
    (lambda: MatrixGraph(torch.zeros(4, dtype=torch.long), torch.ones(4)),
     r"'edge_index' must have shape \(2, E\), got \(4,\)"),
    (lambda: make([[0, 1, 2], [0, 1, 2]], torch.ones(3, 1)),
     r"'edge_value' must have shape \(3,\), got \(3, 1\)"),
    (lambda: MatrixGraph.from_triples([[0]], [[0]], [1.0]),
     "'row' must have 1 dimension, got 2"),
    (lambda: make(torch.tensor([[0.0, 1.5], [0.0, 1.0]])),
     "'edge_index' must hold integer ids, got non-integer values of dtype "
     "torch.float32"),
    (lambda: make(torch.tensor([[True], [False]])),
     "'edge_index' must hold integer ids, got dtype torch.bool"),
    (lambda: make([[0, 1], [0, 1]], torch.tensor([True, False])),
     "'edge_value' must hold real numbers, got dtype torch.bool"),
    (lambda: MatrixGraph.from_triples([0, 1], [0, 1],
                                      np.array([1.0, 'a'], dtype=object)),
     r"expected numbers, got an array of Python objects \(first: 1.0\)"),
    (lambda: MatrixGraph.from_triples([0], [0], [None]),
     "expected numbers, got an array of Python objects"),
    (lambda: MatrixGraph.from_triples(['a'], ['b'], [1.0]),
     "expected numbers, got an array of dtype <U1"),
    (lambda: make([[0], [0]], edge_label=torch.ones(1)),
     "'edge_label' was given without 'edge_label_index'"),
    (lambda: MatrixGraph(torch.tensor([[0], [0]])),
     "'edge_value' is required with 'edge_index'"),
    (lambda: make([[0], [0]], num_rows=1, num_cols=1, row_keys=['a', 'b']),
     r"'row_keys' must have one key per id \(1\), got 2"),
], ids=['edge_index-3xE', 'edge_index-1d', 'value-2d', 'row-2d',
        'float-ids', 'bool-ids', 'bool-values', 'object-values',
        'none-values', 'string-ids', 'label-without-index', 'no-values',
        'keys-length'])
def test_validate_shapes_and_types(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_from_dense_errors():
    with pytest.raises(ValueError, match=r"'mask' must have the shape of "
                                         r"'matrix' \(2, 3\), got \(3, 2\)"):
        MatrixGraph.from_dense(np.zeros((2, 3)), np.ones((3, 2), dtype=bool))
    with pytest.raises(ValueError, match=r"'matrix' must have 2 dimensions, "
                                         r"got 3 \(shape \(1, 2, 3\)\)"):
        MatrixGraph.from_dense(torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match="'matrix' must have 2 dimensions, "
                                         "got 1"):
        MatrixGraph.from_dense([1.0, 2.0])
    with pytest.raises(ValueError, match="'edge_value' must be finite"):
        MatrixGraph.from_dense([[NAN, 1.0]], [[True, True]])


def test_from_scipy_errors():
    with pytest.raises(ValueError, match='expected a SciPy sparse matrix, '
                                         'got ndarray'):
        MatrixGraph.from_scipy(np.eye(2))
    with pytest.raises(ValueError, match='expected a SciPy sparse matrix, '
                                         'got list'):
        MatrixGraph.from_scipy([[1.0]])


def test_from_pandas_errors():
    frame = pd.DataFrame({'row': [0], 'col': [1], 'rating': [3.0]})
    match = re.escape("frame has no column(s) ['value']; its columns are "
                      "['row', 'col', 'rating']")
    with pytest.raises(ValueError, match=match):
        MatrixGraph.from_pandas(frame)
    with pytest.raises(ValueError, match=re.escape("['user', 'item']")):
        MatrixGraph.from_pandas(frame, row='user', col='item',
                                value='rating')

    frame = pd.DataFrame({'row': [0, 1], 'col': [0, 0],
                          'value': ['a', 'b']})
    with pytest.raises(ValueError, match="column 'value' must hold numbers, "
                                         "got dtype"):
        MatrixGraph.from_pandas(frame)
    frame['value'] = [True, False]
    with pytest.raises(ValueError, match='must hold numbers, got dtype bool'):
        MatrixGraph.from_pandas(frame)


@pytest.mark.parametrize('rows,cols', [
    ([0.0, NAN], [0, 1]),
    (['a', 'b'], ['x', None]),
    (pd.Series(['a', None], dtype='str'), ['x', 'y']),
], ids=['nan', 'none', 'missing-string'])
def test_from_pandas_missing_keys(rows, cols):
    frame = pd.DataFrame({'row': rows, 'col': cols, 'value': [1.0, 2.0]})
    with pytest.raises(ValueError, match='keys must not be missing'):
        MatrixGraph.from_pandas(frame)


# ----------------------------------------------------------------------
# Dtypes.

def test_dtype_int_values_become_default_float():
    graph = MatrixGraph.from_triples([0, 1], [1, 0], np.array([3, 4]))
    assert graph.edge_value.dtype == torch.get_default_dtype()
    assert graph.edge_value.tolist() == [3.0, 4.0]
    graph = make([[0], [0]], torch.tensor([2]),
                 edge_label_index=torch.tensor([[0], [0]]),
                 edge_label=torch.tensor([5]))
    assert graph.edge_value.dtype == torch.get_default_dtype()
    assert graph.edge_label.dtype == torch.get_default_dtype()
    dense = MatrixGraph.from_dense(np.array([[1, 2]]))
    assert dense.edge_value.dtype == torch.get_default_dtype()


def test_dtype_follows_default_float64(float64_default):
    graph = MatrixGraph.from_triples([0], [0], [3])
    assert graph.edge_value.dtype == torch.float64


@pytest.mark.parametrize('dtype', [torch.float64, torch.float16])
def test_dtype_float_values_kept(dtype):
    graph = make([[0, 1], [1, 0]], torch.tensor([1.5, 2.5], dtype=dtype))
    assert graph.edge_value.dtype == dtype
    assert graph.to_dense().dtype == dtype
    graph = MatrixGraph.from_triples([0], [0], np.array([1.5]))
    assert graph.edge_value.dtype == torch.float64


def test_dtype_int32_index_becomes_long():
    graph = make(torch.tensor([[0, 1], [2, 0]], dtype=torch.int32),
                 edge_label_index=torch.tensor([[1], [1]], dtype=torch.int32))
    assert graph.edge_index.dtype == torch.long
    assert graph.edge_label_index.dtype == torch.long
    assert graph.edge_index.tolist() == [[0, 1], [2, 0]]

    graph = MatrixGraph.from_triples(np.array([1, 0], dtype=np.int32),
                                     np.array([0, 2], dtype=np.int32),
                                     [1.0, 2.0])
    assert graph.edge_index.dtype == torch.long
    graph = make(torch.tensor([[0.0, 1.0], [2.0, 0.0]]))
    assert graph.edge_index.dtype == torch.long
    assert graph.edge_index.tolist() == [[0, 1], [2, 0]]


# ----------------------------------------------------------------------
# Repr.

def test_repr():
    assert repr(small_graph()) == ('MatrixGraph(num_rows=3, num_cols=5, '
                                   'num_entries=4, num_query=2)')
    graph = MatrixGraph.from_triples([0], [1], [1.0], num_rows=2)
    assert repr(graph) == ('MatrixGraph(num_rows=2, num_cols=2, '
                           'num_entries=1, num_query=0)')
