"""Meta-train, meta-validation and meta-test parts of one dataset matrix.

Meta-learning needs tasks whose rows *and* columns were never seen during
meta-training. :func:`split_rows_cols` therefore splits the rows of a dataset
matrix into three disjoint sets and, independently, its columns into three
disjoint sets; part ``p`` is the block of ``p``'s rows by ``p``'s columns.
Entries in the six off-diagonal blocks (a training row with a test column,
and so on) belong to no part and are never used.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from .matrix_graph import MatrixGraph

__all__ = ['MetaSplit', 'split_rows_cols', 'PARTS']

#: Names of the three parts, in order.
PARTS = ('train', 'val', 'test')


@dataclass(frozen=True, eq=False)
class MetaSplit:
    r"""Disjoint row ids and column ids of the meta-train (``'train'``),
    meta-validation (``'val'``) and meta-test (``'test'``) parts of a
    matrix of shape ``(num_rows, num_cols)``.

    Usually made by :func:`split_rows_cols`; :meth:`to_dict` and
    :meth:`from_dict` store it in a checkpoint as plain lists.

    Args:
        rows (dict): Part name to the row ids of that part, each a 1-D
            integer tensor or a list. They are stored sorted.
        cols (dict): Part name to the column ids of that part.
        num_rows (int): Number of rows of the split matrix.
        num_cols (int): Number of columns of the split matrix.

    Raises:
        ValueError: If a part is missing, an id is out of range, or two
            parts share a row or a column.
    """
    rows: Dict[str, Tensor]
    cols: Dict[str, Tensor]
    num_rows: int
    num_cols: int

    def __post_init__(self):
        # Frozen: normalise through object.__setattr__.
        for side, size in (('rows', self.num_rows), ('cols', self.num_cols)):
            ids = _check_parts(getattr(self, side), size, side)
            object.__setattr__(self, side, ids)

    def part(self, graph: MatrixGraph, name: str) -> MatrixGraph:
        r"""The block of ``graph`` on part ``name``'s rows and columns.

        Rows and columns are re-indexed ``0, 1, ...`` in the order of
        :attr:`rows` and :attr:`cols`, i.e. by increasing source id. The
        block keeps the observed entries, and the query entries
        (``edge_label_index``, ``edge_label``) of ``graph`` if it has any,
        that fall inside it, as well as ``row_keys`` and ``col_keys``. It
        also holds the source ids as ``row_id`` (shape ``(num_rows,)``) and
        ``col_id`` (shape ``(num_cols,)``), which
        :class:`~gnn_metamf.data.TaskSampler` passes on to its tasks (ids
        in the dataset: if ``graph`` has ``row_id`` and ``col_id`` itself,
        they are looked up there).

        Args:
            graph (MatrixGraph): The matrix the split was made for.
            name (str): ``'train'``, ``'val'`` or ``'test'``.
        """
        if name not in PARTS:
            raise ValueError(f"part must be one of {PARTS}, got {name!r}")
        if (graph.num_rows, graph.num_cols) != (self.num_rows,
                                                self.num_cols):
            raise ValueError(f"the split was made for a {self.num_rows} x "
                             f"{self.num_cols} matrix, got a "
                             f"{graph.num_rows} x {graph.num_cols} one")
        return _block(graph, self.rows[name], self.cols[name])

    def to_dict(self) -> Dict[str, Any]:
        r"""The split as plain Python ints and lists."""
        return {
            'num_rows': self.num_rows,
            'num_cols': self.num_cols,
            'rows': {name: self.rows[name].tolist() for name in PARTS},
            'cols': {name: self.cols[name].tolist() for name in PARTS},
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> MetaSplit:
        r"""Inverse of :meth:`to_dict`."""
        missing = [k for k in ('num_rows', 'num_cols', 'rows', 'cols')
                   if k not in state]
        if missing:
            raise ValueError(f"state has no key(s) {missing}; it has "
                             f"{sorted(state)}")
        return cls(rows=dict(state['rows']), cols=dict(state['cols']),
                   num_rows=int(state['num_rows']),
                   num_cols=int(state['num_cols']))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MetaSplit):
            return NotImplemented
        return ((self.num_rows, self.num_cols) == (other.num_rows,
                                                   other.num_cols)
                and all(torch.equal(self.rows[p], other.rows[p])
                        and torch.equal(self.cols[p], other.cols[p])
                        for p in PARTS))

    __hash__ = None  # Mutable tensors inside; equal splits need not hash.

    def __repr__(self) -> str:
        rows = ', '.join(f'{p}={self.rows[p].numel()}' for p in PARTS)
        cols = ', '.join(f'{p}={self.cols[p].numel()}' for p in PARTS)
        return (f'{self.__class__.__name__}({self.num_rows} x '
                f'{self.num_cols}, rows=({rows}), cols=({cols}))')


def split_rows_cols(
    graph: MatrixGraph,
    fractions: Sequence[float] = (0.7, 0.1, 0.2),
    seed: int = 0,
) -> MetaSplit:
    r"""Splits the rows and, independently, the columns of ``graph`` into
    disjoint meta-train, meta-validation and meta-test parts.

    Each side is shuffled by a NumPy generator seeded with ``[seed, 0]``
    (rows) or ``[seed, 1]`` (columns) and cut at the rounded cumulative
    ``fractions``, so the part sizes add up exactly to ``num_rows`` and
    ``num_cols``. A part whose fraction is positive may still be empty for
    a very small matrix.

    Only the three diagonal blocks are used, so a part keeps about
    :math:`f_\text{row} \cdot f_\text{col}` of the entries, and the three
    parts together about :math:`\sum_p f_p^2`: with the default
    ``(0.7, 0.1, 0.2)`` that is 49%, 1% and 4%, 54% in total. On MovieLens
    100K (943 x 1682, 100,000 ratings) the meta-test part is a 189 x 336
    block with only about 4,000 ratings (3,800 to 4,300 for seeds 0 to
    2), and the meta-validation part, 94 x 169, with 750 to 1,200. Rows
    and columns with many ratings make these numbers vary from seed to
    seed.

    Args:
        graph (MatrixGraph): The dataset matrix; only its size is used.
        fractions (sequence of float): Fractions of rows, and of columns,
            in the ``(train, val, test)`` parts: three non-negative numbers
            that sum to 1. (default: :obj:`(0.7, 0.1, 0.2)`)
        seed (int): Seed of the permutations, a non-negative integer.
            (default: :obj:`0`)

    Returns:
        MetaSplit: Use :meth:`MetaSplit.part` to get each part's matrix.

    Raises:
        ValueError: If ``fractions`` or ``seed`` are invalid.
    """
    fractions = _check_fractions(fractions)
    seed = _check_seed(seed)
    num_rows, num_cols = int(graph.num_rows), int(graph.num_cols)
    rows = _split_ids(num_rows, fractions, np.random.default_rng([seed, 0]))
    cols = _split_ids(num_cols, fractions, np.random.default_rng([seed, 1]))
    return MetaSplit(rows=rows, cols=cols, num_rows=num_rows,
                     num_cols=num_cols)


# ----------------------------------------------------------------------
# Helpers.

def _check_fractions(fractions: Any) -> tuple:
    try:
        values = tuple(fractions)
    except TypeError:
        raise ValueError(f"'fractions' must be 3 numbers (train, val, "
                         f"test), got {fractions!r}") from None
    if len(values) != 3:
        raise ValueError(f"'fractions' must be 3 numbers (train, val, "
                         f"test), got {len(values)}: {values}")
    for value in values:
        if isinstance(value, (bool, np.bool_)) or not isinstance(
                value, (int, float, np.integer, np.floating)):
            raise ValueError(f"'fractions' must be numbers, got {value!r} "
                             f"in {values}")
    values = tuple(float(v) for v in values)
    if not all(math.isfinite(v) and v >= 0 for v in values):
        raise ValueError(f"'fractions' must be non-negative, got {values}")
    total = sum(values)
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"'fractions' must sum to 1, got {values} summing "
                         f"to {total:g}")
    return values


def _check_seed(seed: Any) -> int:
    if isinstance(seed, (bool, np.bool_)) or not isinstance(
            seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"'seed' must be a non-negative integer, got "
                         f"{seed!r}")
    return int(seed)


def _split_ids(size: int, fractions: tuple,
               rng: np.random.Generator) -> Dict[str, Tensor]:
    # Rounded cumulative bounds never decrease, so no part size is negative
    # and the sizes add up to `size`.
    bounds = [0] + [int(math.floor(size * f + 0.5))
                    for f in np.cumsum(fractions[:-1])] + [size]
    bounds = np.minimum(bounds, size)
    perm = rng.permutation(size)
    return {
        name: torch.from_numpy(np.sort(perm[bounds[k]:bounds[k + 1]]))
        for k, name in enumerate(PARTS)
    }


def _check_parts(parts: Mapping[str, Any], size: int,
                 side: str) -> Dict[str, Tensor]:
    if not isinstance(parts, Mapping) or set(parts) != set(PARTS):
        got = sorted(parts) if isinstance(parts, Mapping) else parts
        raise ValueError(f"'{side}' must map each of {PARTS} to ids, got "
                         f"{got!r}")
    out = {}
    seen = torch.zeros(size, dtype=torch.bool)
    for name in PARTS:
        ids = torch.as_tensor(parts[name])
        if ids.numel() == 0:
            ids = ids.reshape(0).long()
        if ids.dim() != 1 or ids.is_floating_point() or \
                ids.dtype == torch.bool:
            raise ValueError(f"'{side}[{name!r}]' must be a 1-D tensor of "
                             f"integer ids, got shape {tuple(ids.shape)} "
                             f"and dtype {ids.dtype}")
        ids = ids.long()
        if ids.numel() > 0 and (int(ids.min()) < 0 or int(ids.max()) >= size):
            bad = int(ids.min()) if int(ids.min()) < 0 else int(ids.max())
            raise ValueError(f"'{side}[{name!r}]' has id {bad}, expected ids "
                             f"in [0, {size})")
        if seen[ids].any() or torch.unique(ids).numel() != ids.numel():
            raise ValueError(f"the parts of '{side}' must be disjoint and "
                             f"hold no id twice; '{side}[{name!r}]' repeats "
                             f"an id")
        seen[ids] = True
        out[name] = ids.sort().values
    return out


def _block(graph: MatrixGraph, rows: Tensor, cols: Tensor) -> MatrixGraph:
    # The block on `rows` x `cols`, re-indexed in their order; subgraph sets
    # `row_id` and `col_id` to the source ids.
    device = graph.edge_index.device
    return graph.subgraph(rows.to(device), cols.to(device))
