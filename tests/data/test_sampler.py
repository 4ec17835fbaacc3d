import json

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

from gnn_metamf.data import (
    MatrixGraph,
    TaskSampler,
    split_rows_cols,
    whole_matrix_task,
)

TASK_KEYS = ('edge_index', 'edge_value', 'edge_label_index', 'edge_label',
             'row_id', 'col_id')


def random_matrix(num_rows=60, num_cols=50, density=0.4, seed=0):
    # Column popularity falls off, as in rating data.
    rng = np.random.default_rng(seed)
    popularity = np.linspace(1.5, 0.1, num_cols) * density
    mask = rng.random((num_rows, num_cols)) < popularity
    row, col = np.nonzero(mask)
    value = rng.integers(1, 6, size=row.size).astype(np.float32)
    return MatrixGraph.from_triples(row, col, value, num_rows=num_rows,
                                    num_cols=num_cols)


def assert_same_task(a, b):
    assert (a.num_rows, a.num_cols) == (b.num_rows, b.num_cols)
    for key in TASK_KEYS:
        assert torch.equal(a[key], b[key]), key


def same_task(a, b):
    return (a.num_rows, a.num_cols) == (b.num_rows, b.num_cols) and all(
        a[key].shape == b[key].shape and torch.equal(a[key], b[key])
        for key in TASK_KEYS)


def test_sampler_reproducible():
    graph = random_matrix()
    sampler = TaskSampler(graph, num_rows=(5, 20), num_cols=(5, 20), seed=3)
    again = TaskSampler(graph, num_rows=(5, 20), num_cols=(5, 20), seed=3)
    assert_same_task(sampler.sample(7), sampler.sample(7))
    assert_same_task(sampler.sample(7), again.sample(7))
    assert not same_task(sampler.sample(7), sampler.sample(8))
    other = TaskSampler(graph, num_rows=(5, 20), num_cols=(5, 20), seed=4)
    assert not same_task(sampler.sample(7), other.sample(7))


def test_sampler_order_independent():
    graph = random_matrix()
    sampler = TaskSampler(graph, num_rows=(5, 20), num_cols=(5, 20))
    expected = TaskSampler(graph, num_rows=(5, 20),
                           num_cols=(5, 20)).sample(5)
    iterated = [next(sampler) for _ in range(6)]
    assert_same_task(iterated[5], expected)
    assert sampler.counter == 6

    fixed = sampler.fixed_tasks(3, offset=4)
    assert sampler.counter == 6  # Fixed tasks do not move the counter.
    for i, task in enumerate(fixed):
        assert_same_task(task, sampler.sample(4 + i))


def test_sampler_sizes_within_ranges():
    graph = random_matrix()
    sampler = TaskSampler(graph, num_rows=(4, 12), num_cols=(3, 9))
    sizes = set()
    for task in sampler.fixed_tasks(40):
        assert 4 <= task.num_rows <= 12 and 3 <= task.num_cols <= 9
        assert task.row_id.shape == (task.num_rows,)
        assert task.col_id.shape == (task.num_cols,)
        sizes.add((task.num_rows, task.num_cols))
    assert len(sizes) > 10

    # Ranges beyond the matrix are clipped to it.
    small = MatrixGraph.from_triples([0, 1, 2, 2], [0, 1, 0, 1],
                                     [1.0, 2.0, 3.0, 4.0], num_rows=4)
    task = TaskSampler(small, num_rows=(10, 20), num_cols=(10, 20)).sample(0)
    assert (task.num_rows, task.num_cols) == (3, 2)
    assert sorted(task.row_id.tolist()) == [0, 1, 2]  # Row 3 is empty.


@pytest.mark.parametrize('col_sampling', ['degree', 'uniform'])
def test_sampler_entries_match_source(col_sampling):
    graph = random_matrix(num_rows=80, num_cols=70)
    split = split_rows_cols(graph, seed=1)
    part = split.part(graph, 'train')
    dense = graph.to_dense()
    sampler = TaskSampler(part, num_rows=(5, 15), num_cols=(5, 15),
                          col_sampling=col_sampling, seed=2)
    for task in sampler.fixed_tasks(10):
        # Task ids are dataset ids, unique, of the training part.
        for ids, part_ids in ((task.row_id, split.rows['train']),
                              (task.col_id, split.cols['train'])):
            assert ids.unique().numel() == ids.numel()
            assert torch.isin(ids, part_ids).all()

        support = task.to_dense()
        query = MatrixGraph(task.edge_label_index, task.edge_label,
                            task.num_rows, task.num_cols).to_dense()
        assert not (~support.isnan() & ~query.isnan()).any()  # Disjoint.
        union = torch.where(support.isnan(), query, support)
        expected = dense[task.row_id][:, task.col_id]
        torch.testing.assert_close(union, expected, equal_nan=True)
        assert (~expected.isnan()).any(dim=0).all()  # No empty column.
        assert task.num_entries >= 1 and task.edge_label.numel() >= 1


def test_sampler_degree_sampling_is_denser():
    graph = random_matrix(num_rows=100, num_cols=200, density=0.1)

    def density(col_sampling):
        sampler = TaskSampler(graph, num_rows=20, num_cols=20,
                              col_sampling=col_sampling)
        tasks = sampler.fixed_tasks(30)
        return np.mean([(t.num_entries + t.edge_label.numel()) /
                        (t.num_rows * t.num_cols) for t in tasks])

    assert density('degree') > 1.2 * density('uniform')


def test_sampler_support_fraction():
    graph = random_matrix()
    sampler = TaskSampler(graph, num_rows=(5, 20), num_cols=(5, 20),
                          support_fraction=0.25, min_query=3)
    for task in sampler.fixed_tasks(10):
        total = task.num_entries + task.edge_label.numel()
        expected = max(1, min(int(np.floor(0.25 * total + 0.5)), total - 3))
        assert task.num_entries == expected
    default = TaskSampler(graph, num_rows=(5, 20), num_cols=(5, 20))
    assert default.support_fraction == 0.7


def test_sampler_support_per_row():
    graph = random_matrix()
    sampler = TaskSampler(graph, num_rows=(5, 20), num_cols=(5, 20),
                          support_per_row=3)
    for task in sampler.fixed_tasks(10):
        support = torch.bincount(task.edge_index[0],
                                 minlength=task.num_rows)
        query = torch.bincount(task.edge_label_index[0],
                               minlength=task.num_rows)
        degree = support + query
        assert torch.equal(support, degree.clamp(max=3))
        assert torch.equal(query, (degree - 3).clamp(min=0))


def test_sampler_state_dict_resumes():
    graph = random_matrix()
    sampler = TaskSampler(graph, num_rows=(5, 20), num_cols=(4, 9),
                          support_per_row=2, col_sampling='uniform', seed=9)
    sampler.next_batch(3)
    state = json.loads(json.dumps(sampler.state_dict()))  # Plain values.
    expected = sampler.next_batch(4)

    resumed = TaskSampler(graph)  # Another configuration, replaced.
    resumed.load_state_dict(state)
    assert resumed.counter == 3
    assert resumed.config() == sampler.config()
    for a, b in zip(resumed.next_batch(4), expected):
        assert_same_task(a, b)

    with pytest.raises(ValueError, match='saved for a 60 x 50 matrix'):
        TaskSampler(random_matrix(num_cols=51)).load_state_dict(state)


def test_sampler_batch_round_trip():
    graph = random_matrix()
    tasks = TaskSampler(graph, num_rows=(5, 20),
                        num_cols=(5, 20)).next_batch(4)
    batch = Batch.from_data_list(tasks)
    assert batch.num_rows == sum(t.num_rows for t in tasks)
    # Source ids are not offset.
    assert torch.equal(batch.row_id, torch.cat([t.row_id for t in tasks]))
    assert torch.equal(batch.col_id, torch.cat([t.col_id for t in tasks]))
    assert torch.equal(batch.row_batch.bincount(),
                       torch.tensor([t.num_rows for t in tasks]))
    for a, b in zip(batch.to_data_list(), tasks):
        assert_same_task(a, b)


def test_sampler_too_sparse():
    # One entry per row and column: a task never has a query entry.
    graph = MatrixGraph.from_triples(torch.arange(20), torch.arange(20),
                                     torch.ones(20))
    sampler = TaskSampler(graph, num_rows=1, num_cols=1, max_tries=5)
    with pytest.raises(ValueError, match=r'too sparse .* 5 draws of task 2'):
        sampler.sample(2)
    # Enough rows per task make it usable again.
    task = TaskSampler(graph, num_rows=10, num_cols=10).sample(2)
    assert task.num_entries + task.edge_label.numel() == 10


@pytest.mark.parametrize('kwargs, match', [
    (dict(support_fraction=0.5, support_per_row=2), 'not both'),
    (dict(support_fraction=1.0), r'must be a number in \(0, 1\), got 1.0'),
    (dict(support_per_row=0), "'support_per_row' must be an integer >= 1"),
    (dict(num_rows=(8, 4)), r'low <= high, got \(8, 4\)'),
    (dict(num_cols=(0, 4)), r"'num_cols\[0\]' must be an integer >= 1"),
    (dict(num_rows='many'), 'must be an integer or a pair'),
    (dict(col_sampling='popular'), "'col_sampling' must be one of"),
    (dict(min_query=-1), "'min_query' must be an integer >= 0"),
    (dict(seed=1.5), "'seed' must be an integer >= 0, got 1.5"),
])
def test_sampler_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TaskSampler(random_matrix(), **kwargs)


def test_sampler_empty_matrix():
    graph = MatrixGraph(torch.zeros(2, 0, dtype=torch.long), torch.zeros(0),
                        num_rows=3, num_cols=4)
    with pytest.raises(ValueError, match=r'without entries \(3 x 4'):
        TaskSampler(graph)


def test_whole_matrix_task():
    graph = random_matrix()
    split = split_rows_cols(graph, seed=0)
    part = split.part(graph, 'test')
    task = whole_matrix_task(part, support_fraction=0.6, seed=1)
    assert_same_task(task, whole_matrix_task(part, support_fraction=0.6,
                                             seed=1))
    assert torch.equal(task.row_id, split.rows['test'])
    assert (task.num_rows, task.num_cols) == (part.num_rows, part.num_cols)
    assert task.num_entries == round(0.6 * part.num_entries)

    support, query = task.to_dense(), MatrixGraph(
        task.edge_label_index, task.edge_label, task.num_rows,
        task.num_cols).to_dense()
    assert not (~support.isnan() & ~query.isnan()).any()
    union = torch.where(support.isnan(), query, support)
    torch.testing.assert_close(union, part.to_dense(), equal_nan=True)

    task = whole_matrix_task(part, support_per_row=1)
    assert torch.bincount(task.edge_index[0]).max() == 1

    single = MatrixGraph.from_triples([0], [0], [1.0])
    with pytest.raises(ValueError, match='gave 1 support and 0 query'):
        whole_matrix_task(single)


def test_sampler_support_fraction_range_varies_per_task():
    gen = torch.Generator().manual_seed(0)
    dense = torch.randn(60, 60, generator=gen)
    graph = MatrixGraph.from_dense(dense)  # Fully observed.
    sampler = TaskSampler(graph, num_rows=30, num_cols=30,
                          support_fraction=(0.2, 0.8), seed=0)
    shares = [t.num_entries / (t.num_entries + t.edge_label.numel())
              for t in sampler.fixed_tasks(30)]
    assert 0.18 < min(shares) < 0.4 and 0.6 < max(shares) < 0.82
    state = sampler.state_dict()
    assert state['config']['support_fraction'] == [0.2, 0.8]
    other = TaskSampler(graph, num_rows=30, num_cols=30, seed=0)
    other.load_state_dict(state)
    assert other.support_fraction == (0.2, 0.8)
    with pytest.raises(ValueError, match=r'\(low, high\) with 0 < low'):
        TaskSampler(graph, support_fraction=(0.8, 0.2))
