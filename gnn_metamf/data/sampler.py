"""Meta-learning tasks: small sub-matrices with a support/query split.

A task is a sub-matrix of one part of a dataset (see
:func:`~gnn_metamf.data.split_rows_cols`). Its observed entries are split
at random into *support* entries, which a model sees (``edge_index``,
``edge_value``), and *query* entries, which it must predict
(``edge_label_index``, ``edge_label``).

Task ``i`` of a :class:`TaskSampler` is drawn by a NumPy generator seeded
with ``[seed, i]`` alone, so it does not depend on which tasks were drawn
before: validation and test task sets are the same in every run and for
every method, and training resumes exactly from a saved counter.
"""
from __future__ import annotations

from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from .matrix_graph import MatrixGraph

__all__ = ['TaskSampler', 'whole_matrix_task', 'COL_SAMPLING']

#: How :class:`TaskSampler` picks the columns of a task.
COL_SAMPLING = ('degree', 'uniform')

#: Support fraction used when neither ``support_fraction`` nor
#: ``support_per_row`` is given.
DEFAULT_SUPPORT_FRACTION = 0.7

SizeRange = Union[int, Tuple[int, int]]


class TaskSampler:
    r"""Draws meta-learning tasks from one matrix, usually a part of a
    :class:`~gnn_metamf.data.MetaSplit`.

    Task ``i`` is drawn as follows, by ``np.random.default_rng([seed, i])``:

    1. Its size: a number of rows uniformly in ``num_rows`` and a number of
       columns uniformly in ``num_cols`` (both ranges inclusive).
    2. Its rows: uniformly without replacement among the rows of ``graph``
       with at least one observed entry.
    3. Its columns: without replacement among the columns observed in
       those rows. With ``col_sampling='degree'`` a column is drawn with
       probability proportional to its number of entries in those rows
       (successive sampling), which makes the sub-matrix denser than
       uniform sampling (``'uniform'``).
    4. The sub-matrix on those rows and columns, re-indexed ``0, 1, ...``
       by increasing source id. Every task column has an entry; a task row
       may have none.
    5. A random split of its observed entries into support and query.

    The numbers of rows and columns are clipped to what is available: the
    rows of ``graph`` that have an entry, and the columns observed in the
    task's rows. If a draw leaves no support entry or fewer than
    ``min_query`` query entries, it is redrawn (by the same generator) up
    to ``max_tries`` times in all.

    The split into support and query is set by at most one of:

    * ``support_fraction=(low, high)``: as below with a fraction ``f``
      drawn uniformly in ``[low, high]`` for each task, so that training
      sees tasks of many densities.
    * ``support_fraction=f``: :math:`\mathrm{round}(f \cdot E)` of the
      task's ``E`` entries are support, the rest query; the count is
      clipped to ``[1, E - min_query]``.
    * ``support_per_row=k``: each row with more than ``k`` entries has
      exactly ``k`` support entries and the rest are query; a row with at
      most ``k`` entries is all support and has no query.

    Neither means ``support_fraction=0.7``.

    A task is a :class:`~gnn_metamf.data.MatrixGraph` with ``edge_index``,
    ``edge_value``, ``edge_label_index``, ``edge_label``, and the source
    ids of its rows and columns as ``row_id`` and ``col_id``: ids in
    ``graph``, or, when ``graph`` has ``row_id`` and ``col_id`` itself (as
    the parts made by :meth:`MetaSplit.part` have), ids in the dataset.
    These ids are not offset when tasks are batched. Query entries that
    ``graph`` itself may hold are ignored.

    Args:
        graph (MatrixGraph): The matrix to sample from. Its entries are
            copied to the CPU once; tasks are on the CPU.
        num_rows (int or (int, int)): Range ``(low, high)`` of the number of
            rows of a task, or one fixed number. (default: :obj:`(32, 128)`)
        num_cols (int or (int, int)): The same for columns.
            (default: :obj:`(32, 128)`)
        support_fraction (float or (float, float), optional): Fraction of
            each task's entries that are support, in ``(0, 1)``, or a range
            to draw it from per task. (default: :obj:`None`)
        support_per_row (int, optional): Number of support entries of each
            row, at least 1. (default: :obj:`None`)
        min_query (int): Least number of query entries of a task.
            (default: :obj:`1`)
        col_sampling (str): ``'degree'`` or ``'uniform'``.
            (default: :obj:`'degree'`)
        seed (int): Seed, a non-negative integer. (default: :obj:`0`)
        max_tries (int): Draws per task before giving up. (default:
            :obj:`10`)

    Raises:
        ValueError: If an argument is invalid, or ``graph`` has no entry.

    Example:

    .. code-block:: python

        split = split_rows_cols(graph, seed=0)
        train = TaskSampler(split.part(graph, 'train'), num_rows=(32, 128),
                            num_cols=(32, 128), seed=0)
        val_tasks = TaskSampler(split.part(graph, 'val'),
                                seed=1).fixed_tasks(100)
        for step in range(num_steps):
            batch = Batch.from_data_list(train.next_batch(8))
    """
    def __init__(
        self,
        graph: MatrixGraph,
        num_rows: SizeRange = (32, 128),
        num_cols: SizeRange = (32, 128),
        support_fraction: Optional[float] = None,
        support_per_row: Optional[int] = None,
        min_query: int = 1,
        col_sampling: str = 'degree',
        seed: int = 0,
        max_tries: int = 10,
    ):
        self._configure(num_rows=num_rows, num_cols=num_cols,
                        support_fraction=support_fraction,
                        support_per_row=support_per_row,
                        min_query=min_query, col_sampling=col_sampling,
                        seed=seed, max_tries=max_tries)
        self.counter = 0
        self._index(graph)

    def _configure(self, num_rows, num_cols, support_fraction,
                   support_per_row, min_query, col_sampling, seed,
                   max_tries) -> None:
        num_rows = _check_range(num_rows, 'num_rows')
        num_cols = _check_range(num_cols, 'num_cols')
        support_fraction, support_per_row = _check_support(
            support_fraction, support_per_row)
        min_query = _check_int(min_query, 'min_query', 0)
        if col_sampling not in COL_SAMPLING:
            raise ValueError(f"'col_sampling' must be one of {COL_SAMPLING}, "
                             f"got {col_sampling!r}")
        seed = _check_int(seed, 'seed', 0)
        max_tries = _check_int(max_tries, 'max_tries', 1)

        self.num_rows = num_rows
        self.num_cols = num_cols
        self.support_fraction = support_fraction
        self.support_per_row = support_per_row
        self.min_query = min_query
        self.col_sampling = col_sampling
        self.seed = seed
        self.max_tries = max_tries

    def _index(self, graph: MatrixGraph) -> None:
        # A CSR index of the entries, sorted by (row, col), so that a task
        # gathers only the entries of its own rows.
        if not isinstance(graph, MatrixGraph):
            raise ValueError(f"expected a MatrixGraph, got "
                             f"{type(graph).__name__}")
        if graph.num_entries == 0:
            raise ValueError(f"cannot sample tasks from a matrix without "
                             f"entries ({graph.num_rows} x "
                             f"{graph.num_cols}, 0 entries)")
        row, col = graph.edge_index.cpu().numpy()
        order = np.lexsort((col, row))
        self._shape = (graph.num_rows, graph.num_cols, graph.num_entries)
        self._col = col[order]
        self._value = _take(graph.edge_value.detach().cpu(), order)
        degree = np.bincount(row, minlength=graph.num_rows)
        self._indptr = np.concatenate([[0], np.cumsum(degree)])
        self._rows = np.flatnonzero(degree)  # Rows with an entry.
        self._row_id = _source_ids(graph, 'row_id', graph.num_rows)
        self._col_id = _source_ids(graph, 'col_id', graph.num_cols)

    # ------------------------------------------------------------------
    # Sampling.

    def sample(self, index: int) -> MatrixGraph:
        r"""Task number ``index``; the same for the same ``seed`` and
        ``index``, whatever was sampled before. Does not move
        :attr:`counter`.

        Raises:
            ValueError: If no usable task was found in ``max_tries`` draws.
        """
        index = _check_int(index, 'index', 0)
        rng = np.random.default_rng([self.seed, index])
        for _ in range(self.max_tries):
            task = self._draw(rng)
            if task is not None:
                return task
        raise ValueError(
            f"the matrix ({self._shape[0]} x {self._shape[1]}, "
            f"{self._shape[2]} entries) is too sparse for the requested task "
            f"sizes: {self.max_tries} draws of task {index} gave none with "
            f"at least 1 support and {self.min_query} query entr(ies); ask "
            f"for more rows or columns per task, a lower 'min_query' or a "
            f"smaller support")

    def _draw(self, rng: np.random.Generator) -> Optional[MatrixGraph]:
        num_rows = _draw_size(rng, self.num_rows, self._rows.size)
        num_cols = _draw_size(rng, self.num_cols, None)

        rows = np.sort(rng.choice(self._rows, size=num_rows, replace=False))
        starts, ends = self._indptr[rows], self._indptr[rows + 1]
        positions = _ranges(starts, ends)  # (E_rows,) into the CSR arrays.
        local_row = np.repeat(np.arange(num_rows), ends - starts)

        # Columns observed in these rows, and their counts.
        col_ids, inverse, counts = np.unique(
            self._col[positions], return_inverse=True, return_counts=True)
        num_cols = min(num_cols, col_ids.size)
        if self.col_sampling == 'degree':
            # Efraimidis-Spirakis: the smallest Exp(1) / weight keys are a
            # weighted sample without replacement.
            keys = rng.exponential(size=col_ids.size) / counts
        else:
            keys = rng.random(col_ids.size)
        chosen = np.zeros(col_ids.size, dtype=bool)
        chosen[np.argpartition(keys, num_cols - 1)[:num_cols]] = True
        local_col_of = np.cumsum(chosen) - 1  # Increasing source id order.

        keep = chosen[inverse]
        positions = positions[keep]
        local_row = local_row[keep]
        local_col = local_col_of[inverse[keep]]
        num_entries = positions.size

        support = _split_support(rng, local_row, num_rows, self.min_query,
                                 self.support_fraction, self.support_per_row)
        num_support = int(support.sum())
        if num_support < 1 or num_entries - num_support < self.min_query:
            return None

        return _make_task(
            index=np.stack([local_row, local_col]),  # (2, E)
            values=_take(self._value, positions),
            support=support, num_rows=num_rows, num_cols=num_cols,
            row_id=_take(self._row_id, rows),
            col_id=_take(self._col_id, col_ids[chosen]))

    def fixed_tasks(self, num_tasks: int,
                    offset: int = 0) -> List[MatrixGraph]:
        r"""Tasks ``offset, ..., offset + num_tasks - 1``, e.g. a fixed
        validation or test set. Does not move :attr:`counter`.

        Use a sampler on another part, or another seed, than the training
        sampler, or the tasks will be training tasks.
        """
        num_tasks = _check_int(num_tasks, 'num_tasks', 0)
        offset = _check_int(offset, 'offset', 0)
        return [self.sample(offset + i) for i in range(num_tasks)]

    def __iter__(self) -> Iterator[MatrixGraph]:
        return self

    def __next__(self) -> MatrixGraph:
        r"""Task number :attr:`counter`; moves the counter on by one. The
        sampler never runs out."""
        task = self.sample(self.counter)
        self.counter += 1
        return task

    def next_batch(self, batch_size: int) -> List[MatrixGraph]:
        r"""The next ``batch_size`` tasks, as a list; batch them with
        :meth:`torch_geometric.data.Batch.from_data_list`."""
        batch_size = _check_int(batch_size, 'batch_size', 1)
        return [next(self) for _ in range(batch_size)]

    # ------------------------------------------------------------------
    # Checkpoints.

    def config(self) -> Dict[str, Any]:
        r"""The sampling parameters, as plain Python values."""
        return {
            'num_rows': list(self.num_rows),
            'num_cols': list(self.num_cols),
            'support_fraction': (list(self.support_fraction)
                                 if isinstance(self.support_fraction, tuple)
                                 else self.support_fraction),
            'support_per_row': self.support_per_row,
            'min_query': self.min_query,
            'col_sampling': self.col_sampling,
            'seed': self.seed,
            'max_tries': self.max_tries,
        }

    def state_dict(self) -> Dict[str, Any]:
        r"""The counter, the configuration and the size of the matrix, as
        plain Python values."""
        return {
            'counter': self.counter,
            'config': self.config(),
            'matrix': list(self._shape),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        r"""Restores the counter and the configuration saved by
        :meth:`state_dict`, so that the next tasks are those the saved
        sampler would have drawn.

        Raises:
            ValueError: If ``state`` is incomplete or was saved for a matrix
                of another size or number of entries.
        """
        missing = [k for k in ('counter', 'config', 'matrix')
                   if k not in state]
        if missing:
            raise ValueError(f"state has no key(s) {missing}; it has "
                             f"{sorted(state)}")
        shape = tuple(int(v) for v in state['matrix'])
        if shape != self._shape:
            raise ValueError(
                f"the state was saved for a {shape[0]} x {shape[1]} matrix "
                f"with {shape[2]} entries, this sampler has a "
                f"{self._shape[0]} x {self._shape[1]} one with "
                f"{self._shape[2]}")
        config = dict(state['config'])
        expected = set(self.config())
        if set(config) != expected:
            raise ValueError(f"state['config'] must have keys "
                             f"{sorted(expected)}, got {sorted(config)}")
        config['num_rows'] = tuple(config['num_rows'])
        config['num_cols'] = tuple(config['num_cols'])
        if isinstance(config['support_fraction'], list):
            config['support_fraction'] = tuple(config['support_fraction'])
        counter = _check_int(state['counter'], 'counter', 0)
        self._configure(**config)
        self.counter = counter

    def __repr__(self) -> str:
        if self.support_per_row is not None:
            support = f'support_per_row={self.support_per_row}'
        else:
            support = f'support_fraction={self.support_fraction}'
        return (f'{self.__class__.__name__}(matrix={self._shape[0]}x'
                f'{self._shape[1]}, num_rows={self.num_rows}, '
                f'num_cols={self.num_cols}, {support}, '
                f'col_sampling={self.col_sampling!r}, seed={self.seed})')


def whole_matrix_task(
    graph: MatrixGraph,
    support_fraction: Optional[float] = None,
    support_per_row: Optional[int] = None,
    min_query: int = 1,
    seed: int = 0,
) -> MatrixGraph:
    r"""One task on all of ``graph``: its observed entries split at random
    into support and query, as by :class:`TaskSampler` (see there for
    ``support_fraction`` and ``support_per_row``; neither means
    ``support_fraction=0.7``). Useful to evaluate on a whole part.

    Rows and columns keep their order; ``row_id`` and ``col_id`` are those
    of ``graph`` if it has them, else ``0, 1, ...``. Query entries that
    ``graph`` may hold are ignored. The split depends only on ``seed``.

    Raises:
        ValueError: If an argument is invalid, or the split leaves no
            support entry or fewer than ``min_query`` query entries.
    """
    if not isinstance(graph, MatrixGraph):
        raise ValueError(f"expected a MatrixGraph, got "
                         f"{type(graph).__name__}")
    support_fraction, support_per_row = _check_support(support_fraction,
                                                       support_per_row)
    min_query = _check_int(min_query, 'min_query', 0)
    seed = _check_int(seed, 'seed', 0)

    index = graph.edge_index.cpu().numpy()
    rng = np.random.default_rng(seed)
    support = _split_support(rng, index[0], graph.num_rows, min_query,
                             support_fraction, support_per_row)
    num_support = int(support.sum())
    if num_support < 1 or index.shape[1] - num_support < min_query:
        raise ValueError(f"the matrix ({graph.num_rows} x {graph.num_cols}, "
                         f"{graph.num_entries} entries) cannot be split into "
                         f"at least 1 support and {min_query} query "
                         f"entr(ies): the split gave {num_support} support "
                         f"and {index.shape[1] - num_support} query")
    return _make_task(
        index=index, values=graph.edge_value.detach().cpu(),
        support=support, num_rows=graph.num_rows, num_cols=graph.num_cols,
        row_id=_source_ids(graph, 'row_id', graph.num_rows),
        col_id=_source_ids(graph, 'col_id', graph.num_cols))


# ----------------------------------------------------------------------
# Helpers.

def _check_int(value: Any, name: str, low: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (int, np.integer)) or value < low:
        raise ValueError(f"'{name}' must be an integer >= {low}, got "
                         f"{value!r}")
    return int(value)


def _check_range(value: Any, name: str) -> Tuple[int, int]:
    if isinstance(value, (int, np.integer)) and not isinstance(
            value, (bool, np.bool_)):
        value = (value, value)
    try:
        low, high = value
    except (TypeError, ValueError):
        raise ValueError(f"'{name}' must be an integer or a pair (low, "
                         f"high), got {value!r}") from None
    low = _check_int(low, f'{name}[0]', 1)
    high = _check_int(high, f'{name}[1]', 1)
    if low > high:
        raise ValueError(f"'{name}' must have low <= high, got ({low}, "
                         f"{high})")
    return low, high


def _check_support(fraction: Any,
                   per_row: Any) -> Tuple[Optional[float], Optional[int]]:
    if fraction is not None and per_row is not None:
        raise ValueError(f"give 'support_fraction' or 'support_per_row', not "
                         f"both; got {fraction!r} and {per_row!r}")
    if per_row is not None:
        return None, _check_int(per_row, 'support_per_row', 1)
    if fraction is None:
        return DEFAULT_SUPPORT_FRACTION, None
    if isinstance(fraction, (tuple, list)):
        if len(fraction) != 2 or not all(_is_fraction(f) for f in fraction) \
                or fraction[0] > fraction[1]:
            raise ValueError(f"'support_fraction' as a range must be "
                             f"(low, high) with 0 < low <= high < 1, got "
                             f"{tuple(fraction)!r}")
        if fraction[0] == fraction[1]:
            return float(fraction[0]), None
        return (float(fraction[0]), float(fraction[1])), None
    if not _is_fraction(fraction):
        raise ValueError(f"'support_fraction' must be a number in (0, 1), "
                         f"got {fraction!r}")
    return float(fraction), None


def _is_fraction(value: Any) -> bool:
    return (not isinstance(value, (bool, np.bool_)) and
            isinstance(value, (int, float, np.integer, np.floating)) and
            0 < value < 1)


def _draw_size(rng: np.random.Generator, size_range: Tuple[int, int],
               available: Optional[int]) -> int:
    low, high = size_range
    if available is not None:
        high = min(high, available)
        low = min(low, high)
    return int(rng.integers(low, high + 1))


def _ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    # Concatenation of arange(s, e) for each pair, without a Python loop.
    lengths = ends - starts
    offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
    return offsets + np.arange(lengths.sum())


def _split_support(rng: np.random.Generator, row: np.ndarray, num_rows: int,
                   min_query: int, fraction: Optional[float],
                   per_row: Optional[int]) -> np.ndarray:
    # Boolean support mask over the entries; the rest are query.
    num_entries = row.size
    support = np.zeros(num_entries, dtype=bool)
    if per_row is None:
        if isinstance(fraction, tuple):
            fraction = rng.uniform(*fraction)
        count = int(np.floor(fraction * num_entries + 0.5))
        count = max(1, min(count, num_entries - min_query))
        if count > 0:
            support[rng.permutation(num_entries)[:count]] = True
        return support

    # Rank the entries of each row in random order; the first `per_row`
    # of each row are support.
    order = np.lexsort((rng.random(num_entries), row))
    degree = np.bincount(row, minlength=num_rows)
    first = np.concatenate([[0], np.cumsum(degree)[:-1]])
    rank = np.arange(num_entries) - first[row[order]]
    support[order[rank < per_row]] = True
    return support


def _take(values: Tensor, positions: np.ndarray) -> Tensor:
    return values.index_select(0, torch.from_numpy(positions))


def _source_ids(graph: MatrixGraph, key: str, size: int) -> Tensor:
    ids = graph.get(key)
    if ids is None:
        return torch.arange(size)
    ids = torch.as_tensor(ids).detach().cpu().long()
    if ids.shape != (size,):
        raise ValueError(f"'{key}' of the matrix must have shape ({size},), "
                         f"got {tuple(ids.shape)}")
    return ids


def _make_task(index: np.ndarray, values: Tensor, support: np.ndarray,
               num_rows: int, num_cols: int, row_id: Tensor,
               col_id: Tensor) -> MatrixGraph:
    # NumPy masks and `index_select`: torch's advanced indexing starts
    # threads even for small tensors, which costs milliseconds per task on
    # a busy machine.
    support, query = np.flatnonzero(support), np.flatnonzero(~support)
    task = MatrixGraph(
        _take_columns(index, support),
        values.index_select(0, torch.from_numpy(support)), num_rows,
        num_cols, edge_label_index=_take_columns(index, query),
        edge_label=values.index_select(0, torch.from_numpy(query)))
    task.row_id = row_id
    task.col_id = col_id
    return task


def _take_columns(index: np.ndarray, positions: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(index[:, positions],
                                                 dtype=np.int64))
