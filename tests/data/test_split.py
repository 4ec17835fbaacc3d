import numpy as np
import pytest
import torch

from gnn_metamf.data import PARTS, MatrixGraph, MetaSplit, split_rows_cols


def random_matrix(num_rows=40, num_cols=30, density=0.3, seed=0,
                  with_query=False):
    rng = np.random.default_rng(seed)
    mask = rng.random((num_rows, num_cols)) < density
    row, col = np.nonzero(mask)
    value = rng.integers(1, 6, size=row.size).astype(np.float32)
    graph = MatrixGraph.from_triples(row, col, value, num_rows=num_rows,
                                     num_cols=num_cols)
    if with_query:
        qrow, qcol = np.nonzero(~mask)
        graph.edge_label_index = torch.from_numpy(np.stack([qrow, qcol]))
        graph.edge_label = -torch.arange(qrow.size, dtype=torch.float32)
    return graph


def test_split_rows_cols_disjoint_and_cover():
    graph = random_matrix()
    split = split_rows_cols(graph, seed=3)
    for ids, size in ((split.rows, 40), (split.cols, 30)):
        all_ids = torch.cat([ids[p] for p in PARTS])
        assert all_ids.numel() == size
        assert torch.equal(all_ids.sort().values, torch.arange(size))
        for p in PARTS:
            assert torch.equal(ids[p], ids[p].sort().values)
    assert [split.rows[p].numel() for p in PARTS] == [28, 4, 8]
    assert [split.cols[p].numel() for p in PARTS] == [21, 3, 6]


def test_split_rows_cols_sizes_sum_exactly():
    graph = MatrixGraph.from_triples([0], [0], [1.0], num_rows=3,
                                     num_cols=7)
    split = split_rows_cols(graph, fractions=(0.5, 0.5, 0.0))
    assert [split.rows[p].numel() for p in PARTS] == [2, 1, 0]
    assert sum(split.cols[p].numel() for p in PARTS) == 7
    assert split.part(graph, 'test').num_rows == 0


def test_split_rows_cols_seeded():
    graph = random_matrix()
    assert split_rows_cols(graph, seed=1) == split_rows_cols(graph, seed=1)
    assert split_rows_cols(graph, seed=1) != split_rows_cols(graph, seed=2)


def test_split_part_entries_match_source():
    graph = random_matrix(with_query=True)
    dense = graph.to_dense()
    split = split_rows_cols(graph, seed=0)
    parts = {p: split.part(graph, p) for p in PARTS}

    for name, part in parts.items():
        rows, cols = split.rows[name], split.cols[name]
        assert (part.num_rows, part.num_cols) == (rows.numel(), cols.numel())
        assert torch.equal(part.row_id, rows)
        assert torch.equal(part.col_id, cols)
        # Every entry of the block, and only those, with its value.
        expected = dense[rows][:, cols]
        torch.testing.assert_close(part.to_dense(), expected,
                                   equal_nan=True)
        # Query entries map back to the source's query entries.
        row, col = part.edge_label_index
        source = torch.stack([rows[row], cols[col]])
        key = graph.edge_label_index[0] * 30 + graph.edge_label_index[1]
        position = {k: i for i, k in enumerate(key.tolist())}
        picked = [position[k] for k in (source[0] * 30 + source[1]).tolist()]
        assert torch.equal(part.edge_label, graph.edge_label[picked])
        inside = torch.isin(graph.edge_label_index[0], rows) & torch.isin(
            graph.edge_label_index[1], cols)
        assert part.edge_label.numel() == int(inside.sum())

    # No part shares a row or a column with another.
    for a in PARTS:
        for b in PARTS:
            if a < b:
                assert not torch.isin(parts[a].row_id, parts[b].row_id).any()
                assert not torch.isin(parts[a].col_id, parts[b].col_id).any()


def test_split_part_keeps_keys_and_composes_ids():
    graph = MatrixGraph.from_triples([0, 1, 2, 3], [0, 1, 2, 3],
                                     [1.0, 2.0, 3.0, 4.0])
    graph.row_keys = ['a', 'b', 'c', 'd']
    split = MetaSplit(rows={'train': [1, 3], 'val': [0], 'test': [2]},
                      cols={'train': [3, 1], 'val': [0], 'test': [2]},
                      num_rows=4, num_cols=4)
    part = split.part(graph, 'train')
    assert part.row_keys == ['b', 'd']
    assert part.col_id.tolist() == [1, 3]  # Stored sorted.
    assert part.edge_index.tolist() == [[0, 1], [0, 1]]
    assert part.edge_value.tolist() == [2.0, 4.0]
    # A part of a part still traces its ids to the dataset.
    inner = MetaSplit(rows={'train': [1], 'val': [0], 'test': []},
                      cols={'train': [0], 'val': [1], 'test': []},
                      num_rows=2, num_cols=2)
    assert inner.part(part, 'train').row_id.tolist() == [3]
    assert inner.part(part, 'train').col_id.tolist() == [1]


def test_split_dict_round_trip():
    graph = random_matrix()
    split = split_rows_cols(graph, seed=5)
    state = split.to_dict()
    assert isinstance(state['rows']['train'], list)
    assert MetaSplit.from_dict(state) == split
    assert repr(split) == ('MetaSplit(40 x 30, rows=(train=28, val=4, '
                           'test=8), cols=(train=21, val=3, test=6))')


@pytest.mark.parametrize('fractions, match', [
    ((0.7, 0.3), 'must be 3 numbers'),
    (0.5, 'must be 3 numbers'),
    ((0.7, '0.1', 0.2), 'must be numbers'),
    ((1.2, -0.2, 0.0), 'must be non-negative'),
    ((0.5, 0.1, 0.2), r'must sum to 1, got \(0.5, 0.1, 0.2\) summing to 0.8'),
    ((float('nan'), 0.5, 0.5), 'must be non-negative'),
])
def test_split_rows_cols_invalid_fractions(fractions, match):
    with pytest.raises(ValueError, match=match):
        split_rows_cols(random_matrix(), fractions=fractions)


def test_split_invalid_seed_and_ids():
    with pytest.raises(ValueError, match="'seed' must be a non-negative"):
        split_rows_cols(random_matrix(), seed=-1)
    parts = {'train': [0, 1], 'val': [1], 'test': []}
    with pytest.raises(ValueError, match='must be disjoint'):
        MetaSplit(rows=parts, cols=parts, num_rows=2, num_cols=2)
    parts = {'train': [0, 2], 'val': [1], 'test': []}
    with pytest.raises(ValueError, match=r'has id 2, expected ids in \[0, 2'):
        MetaSplit(rows=parts, cols=parts, num_rows=2, num_cols=3)
    with pytest.raises(ValueError, match='must map each of'):
        MetaSplit(rows={'train': [0]}, cols=parts, num_rows=3, num_cols=3)


def test_split_part_errors():
    split = split_rows_cols(random_matrix())
    with pytest.raises(ValueError, match="part must be one of"):
        split.part(random_matrix(), 'valid')
    with pytest.raises(ValueError, match='made for a 40 x 30 matrix, got a '
                                         '40 x 31 one'):
        split.part(random_matrix(num_cols=31), 'train')
