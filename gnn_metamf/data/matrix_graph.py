"""A partially observed matrix as a bipartite PyG graph.

Row ``i`` and column ``j`` of a matrix are two node types; every observed
entry ``(i, j, value)`` is one edge between them. :class:`MatrixGraph`
keeps the two node types in separate id spaces (``0 .. num_rows - 1`` and
``0 .. num_cols - 1``), so that batching offsets row ids by ``num_rows`` and
column ids by ``num_cols`` independently, and a batch of matrices is again
one block-diagonal matrix.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data

__all__ = ['MatrixGraph', 'DUPLICATE_POLICIES']

#: How :meth:`MatrixGraph.from_triples` treats an entry given more than once.
DUPLICATE_POLICIES = ('error', 'mean', 'sum', 'first', 'last')

# Attributes that hold (2, *) pairs of (row id, column id).
_PAIR_KEYS = ('edge_index', 'edge_label_index')


class MatrixGraph(Data):
    r"""One partially observed matrix of shape ``(num_rows, num_cols)``.

    The observed entries are the edges of a bipartite graph:
    ``edge_index[0]`` holds row ids, ``edge_index[1]`` column ids and
    ``edge_value`` the observed values. Entries to predict (the query of a
    meta-learning task, or a test split) are ``edge_label_index`` with
    optional targets ``edge_label``, as in PyG's link-level datasets.

    Batching with :class:`torch_geometric.data.Batch` (or PyG's
    ``DataLoader``) stacks matrices block-diagonally: row ids are offset by the
    number of rows before them and column ids by the number of columns.
    :attr:`row_batch` and :attr:`col_batch` say which matrix each row and
    column belongs to. (PyG's own ``batch`` vector counts ``num_rows +
    num_cols`` nodes per matrix and is not used by this library.)

    Args:
        edge_index (torch.Tensor, optional): Observed positions, shape
            ``(2, E)``, integer. (default: :obj:`None`)
        edge_value (torch.Tensor, optional): Observed values, shape ``(E,)``.
            (default: :obj:`None`)
        num_rows (int, optional): Number of rows. Inferred from
            ``edge_index`` when omitted, which misses trailing empty rows.
            (default: :obj:`None`)
        num_cols (int, optional): Number of columns, as ``num_rows``.
            (default: :obj:`None`)
        edge_label_index (torch.Tensor, optional): Positions to predict,
            shape ``(2, Q)``. (default: :obj:`None`)
        edge_label (torch.Tensor, optional): Their true values, shape
            ``(Q,)``. (default: :obj:`None`)
        row_keys (list, optional): The user's key of each row, so that
            predictions can be mapped back. (default: :obj:`None`)
        col_keys (list, optional): The user's key of each column.
            (default: :obj:`None`)
        **kwargs: Further attributes, stored as in :class:`Data`.

    Raises:
        ValueError: If the arguments do not describe a valid matrix; the
            message says what was received and what was expected.
    """
    def __init__(
        self,
        edge_index: Optional[Tensor] = None,
        edge_value: Optional[Tensor] = None,
        num_rows: Optional[int] = None,
        num_cols: Optional[int] = None,
        edge_label_index: Optional[Tensor] = None,
        edge_label: Optional[Tensor] = None,
        row_keys: Optional[Sequence] = None,
        col_keys: Optional[Sequence] = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        # PyG builds empty instances while batching and separating; only a
        # graph given its entries is validated.
        if edge_index is None:
            return

        edge_index = _as_index(edge_index, 'edge_index')
        if edge_value is None:
            raise ValueError("'edge_value' is required with 'edge_index'")
        edge_value = _as_values(edge_value, 'edge_value',
                                edge_index.size(1))
        if num_rows is None:
            num_rows = _infer_size(edge_index[0], edge_label_index, 0)
        if num_cols is None:
            num_cols = _infer_size(edge_index[1], edge_label_index, 1)

        self.edge_index = edge_index
        self.edge_value = edge_value
        self.num_rows = _as_size(num_rows, 'num_rows')
        self.num_cols = _as_size(num_cols, 'num_cols')
        self.num_nodes = self.num_rows + self.num_cols
        if edge_label_index is not None:
            self.edge_label_index = _as_index(edge_label_index,
                                              'edge_label_index')
        if edge_label is not None:
            if edge_label_index is None:
                raise ValueError("'edge_label' was given without "
                                 "'edge_label_index'")
            self.edge_label = _as_values(edge_label, 'edge_label',
                                         self.edge_label_index.size(1))
        if row_keys is not None:
            self.row_keys = _as_keys(row_keys, 'row_keys', self.num_rows)
        if col_keys is not None:
            self.col_keys = _as_keys(col_keys, 'col_keys', self.num_cols)
        self.validate_matrix()

    # ------------------------------------------------------------------
    # Sizes and batch vectors. A batch stores one size per matrix, shape
    # (B,); a single matrix stores a Python int (or a 0-dim tensor after
    # ``to_data_list``). The properties always give the total as an int.

    @property
    def num_rows(self) -> int:
        return _total(self._store.get('num_rows'))

    @num_rows.setter
    def num_rows(self, value: int):
        self._store['num_rows'] = value

    @property
    def num_cols(self) -> int:
        return _total(self._store.get('num_cols'))

    @num_cols.setter
    def num_cols(self, value: int):
        self._store['num_cols'] = value

    @property
    def rows_per_graph(self) -> Tensor:
        r"""Number of rows of each matrix in the batch, shape ``(B,)``."""
        return _per_graph(self._store.get('num_rows'), self._device)

    @property
    def cols_per_graph(self) -> Tensor:
        r"""Number of columns of each matrix in the batch, shape ``(B,)``."""
        return _per_graph(self._store.get('num_cols'), self._device)

    @property
    def num_matrices(self) -> int:
        r"""Number of matrices: 1, or the batch size."""
        return self.rows_per_graph.numel()

    @property
    def row_batch(self) -> Tensor:
        r"""Matrix id of every row, shape ``(num_rows,)``."""
        counts = self.rows_per_graph
        ids = torch.arange(counts.numel(), device=counts.device)
        return ids.repeat_interleave(counts)

    @property
    def col_batch(self) -> Tensor:
        r"""Matrix id of every column, shape ``(num_cols,)``."""
        counts = self.cols_per_graph
        ids = torch.arange(counts.numel(), device=counts.device)
        return ids.repeat_interleave(counts)

    @property
    def num_entries(self) -> int:
        r"""Number of observed entries ``E``."""
        return int(self.edge_index.size(1))

    @property
    def _device(self) -> torch.device:
        edge_index = self._store.get('edge_index')
        return edge_index.device if edge_index is not None else None

    def __inc__(self, key: str, value: Any, *args, **kwargs) -> Any:
        if key in _PAIR_KEYS:
            return torch.tensor([[self.num_rows], [self.num_cols]])
        return super().__inc__(key, value, *args, **kwargs)

    def __cat_dim__(self, key: str, value: Any, *args, **kwargs) -> Any:
        if key in _PAIR_KEYS:
            return 1
        if key in ('num_rows', 'num_cols'):  # Stacked to (B,) in a batch.
            return None
        return super().__cat_dim__(key, value, *args, **kwargs)

    # ------------------------------------------------------------------
    # Validation.

    def validate_matrix(self) -> MatrixGraph:
        r"""Checks ids, sizes and values; raises :class:`ValueError` on the
        first problem and returns ``self`` otherwise."""
        num_rows, num_cols = self.num_rows, self.num_cols
        for key in _PAIR_KEYS:
            index = self._store.get(key)
            if index is None:
                continue
            _check_range(index, num_rows, num_cols, key)
        _check_unique(self.edge_index, num_rows, num_cols, 'edge_index')
        return self

    # ------------------------------------------------------------------
    # Constructors.

    @classmethod
    def from_triples(
        cls,
        row: Any,
        col: Any,
        value: Any,
        num_rows: Optional[int] = None,
        num_cols: Optional[int] = None,
        duplicates: str = 'error',
    ) -> MatrixGraph:
        r"""Builds a matrix from integer ids and values, each of shape
        ``(E,)``.

        Args:
            row, col: Row and column ids in ``[0, num_rows)`` and
                ``[0, num_cols)``.
            value: Observed values.
            num_rows (int, optional): Defaults to ``row.max() + 1``.
            num_cols (int, optional): Defaults to ``col.max() + 1``.
            duplicates (str): What to do with an entry given more than once:
                ``'error'``, or keep its ``'mean'``, ``'sum'``, ``'first'``
                or ``'last'`` value. (default: :obj:`'error'`)
        """
        row = _as_1d(row, 'row')
        col = _as_1d(col, 'col')
        if row.numel() != col.numel():
            raise ValueError(f"'row' and 'col' must have the same length, "
                             f"got {row.numel()} and {col.numel()}")
        edge_index = _as_index(torch.stack([row, col]), 'row/col ids')
        edge_value = _as_values(value, 'value', edge_index.size(1))
        if num_rows is None:
            num_rows = _infer_size(edge_index[0], None, 0)
        if num_cols is None:
            num_cols = _infer_size(edge_index[1], None, 1)
        num_rows = _as_size(num_rows, 'num_rows')
        num_cols = _as_size(num_cols, 'num_cols')
        _check_range(edge_index, num_rows, num_cols, 'row/col ids')
        edge_index, edge_value = _resolve_duplicates(
            edge_index, edge_value, num_cols, duplicates)
        return cls(edge_index, edge_value, num_rows, num_cols)

    @classmethod
    def from_dense(
        cls,
        matrix: Any,
        mask: Optional[Any] = None,
    ) -> MatrixGraph:
        r"""Builds a matrix from a dense array of shape
        ``(num_rows, num_cols)``.

        An entry is observed where ``mask`` is true; without a mask, every
        entry that is not NaN is observed.
        """
        matrix = torch.as_tensor(np.asarray(matrix) if not isinstance(
            matrix, Tensor) else matrix)
        if matrix.dim() != 2:
            raise ValueError(f"'matrix' must have 2 dimensions, got "
                             f"{matrix.dim()} (shape {tuple(matrix.shape)})")
        if not matrix.is_floating_point():
            matrix = matrix.to(torch.get_default_dtype())
        if mask is None:
            mask = ~torch.isnan(matrix)
        else:
            mask = torch.as_tensor(np.asarray(mask) if not isinstance(
                mask, Tensor) else mask)
            if mask.shape != matrix.shape:
                raise ValueError(f"'mask' must have the shape of 'matrix' "
                                 f"{tuple(matrix.shape)}, got "
                                 f"{tuple(mask.shape)}")
            mask = mask.bool()
        row, col = mask.nonzero(as_tuple=True)
        return cls(torch.stack([row, col]), matrix[row, col],
                   matrix.size(0), matrix.size(1))

    @classmethod
    def from_scipy(cls, matrix: Any) -> MatrixGraph:
        r"""Builds a matrix from a SciPy sparse matrix or array; its stored
        entries (explicit zeros too) are the observed ones."""
        import scipy.sparse as sp
        if not sp.issparse(matrix):
            raise ValueError(f"expected a SciPy sparse matrix, got "
                             f"{type(matrix).__name__}")
        coo = matrix.tocoo(copy=True)  # sum_duplicates works in place.
        coo.sum_duplicates()
        return cls.from_triples(coo.row.astype(np.int64),
                                coo.col.astype(np.int64), coo.data,
                                num_rows=coo.shape[0], num_cols=coo.shape[1])

    @classmethod
    def from_pandas(
        cls,
        frame: Any,
        row: str = 'row',
        col: str = 'col',
        value: str = 'value',
        duplicates: str = 'error',
    ) -> MatrixGraph:
        r"""Builds a matrix from a frame with one observed entry per line.

        Row and column keys may be of any hashable type. They are mapped to
        ids ``0, 1, ...`` in sorted order (in order of first appearance when
        they cannot be sorted) and kept as :attr:`row_keys` and
        :attr:`col_keys`, so that ids can be mapped back to keys.
        """
        missing = [c for c in (row, col, value) if c not in frame.columns]
        if missing:
            raise ValueError(f"frame has no column(s) {missing}; its columns "
                             f"are {list(frame.columns)}")
        row_keys, row_ids = _factorize(frame[row].to_numpy())
        col_keys, col_ids = _factorize(frame[col].to_numpy())
        values = frame[value].to_numpy()
        if not np.issubdtype(values.dtype, np.number):
            raise ValueError(f"column {value!r} must hold numbers, got dtype "
                             f"{values.dtype}")
        graph = cls.from_triples(row_ids, col_ids, values.astype(np.float64),
                                 num_rows=len(row_keys),
                                 num_cols=len(col_keys),
                                 duplicates=duplicates)
        graph.row_keys = row_keys
        graph.col_keys = col_keys
        return graph

    @classmethod
    def from_hetero(
        cls,
        data: Any,
        edge_type: Optional[tuple] = None,
        value_key: str = 'rating',
    ) -> MatrixGraph:
        r"""Builds a matrix from a PyG :class:`HeteroData` with one bipartite
        edge type, such as PyG's ``MovieLens100K`` or ``IGMCDataset``.

        The source node type gives the rows, the destination type the columns.
        ``data[edge_type].edge_index`` and ``data[edge_type][value_key]`` are
        the observed entries; ``edge_label_index`` and ``edge_label`` of the
        same edge type, when present, become the query.

        Args:
            data (HeteroData): The graph.
            edge_type (tuple, optional): ``(src, relation, dst)``. Needed
                only when ``data`` has several edge types between distinct
                node types that are not each other's reverse.
                (default: :obj:`None`)
            value_key (str): Edge attribute holding the observed values.
                (default: :obj:`'rating'`)
        """
        from torch_geometric.data import HeteroData
        if not isinstance(data, HeteroData):
            raise ValueError(f"expected a HeteroData, got "
                             f"{type(data).__name__}")
        if edge_type is None:
            edge_type = _pick_edge_type(data, value_key)
        elif edge_type not in data.edge_types:
            raise ValueError(f"edge type {edge_type} not in the graph; it has "
                             f"{data.edge_types}")
        store = data[edge_type]
        if value_key not in store:
            raise ValueError(f"edge type {edge_type} has no attribute "
                             f"{value_key!r}; it has {list(store.keys())}")
        src, _, dst = edge_type
        value = store[value_key].reshape(-1)
        return cls(store.edge_index, value,
                   num_rows=data[src].num_nodes,
                   num_cols=data[dst].num_nodes,
                   edge_label_index=store.get('edge_label_index'),
                   edge_label=store.get('edge_label'))

    # ------------------------------------------------------------------
    # Converters.

    def to_dense(self, fill_value: float = float('nan')) -> Tensor:
        r"""The matrix as a dense tensor of shape ``(num_rows, num_cols)``,
        with ``fill_value`` where no entry is observed."""
        out = self.edge_value.new_full((self.num_rows, self.num_cols),
                                       fill_value)
        out[self.edge_index[0], self.edge_index[1]] = self.edge_value
        return out

    def to_triples(self) -> tuple[Tensor, Tensor, Tensor]:
        r"""The observed entries as ``(row, col, value)``, each of shape
        ``(E,)``."""
        return self.edge_index[0], self.edge_index[1], self.edge_value

    def to_scipy(self) -> Any:
        r"""The observed entries as a SciPy ``coo_matrix``."""
        import scipy.sparse as sp
        row, col, value = (t.detach().cpu().numpy() for t in self.to_triples())
        return sp.coo_matrix((value, (row, col)),
                             shape=(self.num_rows, self.num_cols))

    def to_pandas(self, row: str = 'row', col: str = 'col',
                  value: str = 'value') -> Any:
        r"""The observed entries as a frame, with the user's keys when the
        matrix has them."""
        import pandas as pd
        r, c, v = (t.detach().cpu().numpy() for t in self.to_triples())
        row_keys, col_keys = self.get('row_keys'), self.get('col_keys')
        return pd.DataFrame({
            row: _take_keys(row_keys, r) if row_keys else r,
            col: _take_keys(col_keys, c) if col_keys else c,
            value: v,
        })

    def subgraph(self, rows: Tensor, cols: Tensor) -> MatrixGraph:
        r"""The sub-matrix on the given row and column ids, re-indexed in the
        order given. Observed and query entries outside it are dropped."""
        rows = _as_ids(rows, self.num_rows, 'rows', 'row')
        cols = _as_ids(cols, self.num_cols, 'cols', 'column')
        row_map = rows.new_full((self.num_rows,), -1)
        col_map = cols.new_full((self.num_cols,), -1)
        row_map[rows] = torch.arange(rows.numel(), device=rows.device)
        col_map[cols] = torch.arange(cols.numel(), device=cols.device)

        def keep(index: Tensor) -> tuple[Tensor, Tensor]:
            new = torch.stack([row_map[index[0]], col_map[index[1]]])
            mask = (new >= 0).all(dim=0)
            return new[:, mask], mask

        edge_index, mask = keep(self.edge_index)
        out = type(self)(edge_index, self.edge_value[mask], rows.numel(),
                         cols.numel())
        if self.get('edge_label_index') is not None:
            label_index, mask = keep(self.edge_label_index)
            out.edge_label_index = label_index
            if self.get('edge_label') is not None:
                out.edge_label = self.edge_label[mask]
        for key, ids in (('row_keys', rows), ('col_keys', cols)):
            keys = self.get(key)
            if keys is not None:
                out[key] = [keys[i] for i in ids.tolist()]
        for key, ids in (('row_id', rows), ('col_id', cols)):
            source = self.get(key)
            out[key] = source[ids] if source is not None else ids.clone()
        return out

    def __repr__(self) -> str:
        if isinstance(self._store.get('num_rows'), Tensor) and \
                self._store['num_rows'].dim() == 1:
            return super().__repr__()
        query = self.get('edge_label_index')
        num_query = 0 if query is None else query.size(1)
        return (f'{self.__class__.__name__}(num_rows={self.num_rows}, '
                f'num_cols={self.num_cols}, num_entries={self.num_entries}, '
                f'num_query={num_query})')


# ----------------------------------------------------------------------
# Helpers. Each raises ValueError naming what it got and what it expected.

def _total(value: Any) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, Tensor):
        return int(value.sum())
    return int(value)


def _per_graph(value: Any, device: Optional[torch.device]) -> Tensor:
    if value is None:
        raise ValueError('the matrix has no size; build it with a '
                         'MatrixGraph constructor')
    return torch.as_tensor(value, dtype=torch.long,
                           device=device).reshape(-1)


def _to_tensor(value: Any) -> Tensor:
    if isinstance(value, Tensor):
        return value
    array = np.asarray(value)
    if array.dtype.kind not in 'biufc':  # Strings, objects, dates, ...
        what = ('Python objects' if array.dtype == object
                else f'dtype {array.dtype}')
        first = f' (first: {array.flat[0]!r})' if array.size else ''
        raise ValueError(f'expected numbers, got an array of {what}{first}')
    return torch.from_numpy(array.copy())


def _as_1d(value: Any, name: str) -> Tensor:
    tensor = _to_tensor(value)
    if tensor.dim() != 1:
        raise ValueError(f"'{name}' must have 1 dimension, got "
                         f"{tensor.dim()} (shape {tuple(tensor.shape)})")
    return tensor


def _as_index(index: Any, name: str) -> Tensor:
    index = _to_tensor(index)
    if index.dim() != 2 or index.size(0) != 2:
        raise ValueError(f"'{name}' must have shape (2, E), got "
                         f"{tuple(index.shape)}")
    if index.is_floating_point():
        if not torch.equal(index, index.round()) or not torch.isfinite(
                index).all():
            raise ValueError(f"'{name}' must hold integer ids, got "
                             f"non-integer values of dtype {index.dtype}")
    elif index.dtype == torch.bool or index.is_complex():
        raise ValueError(f"'{name}' must hold integer ids, got dtype "
                         f"{index.dtype}")
    return index.long()


def _as_ids(ids: Any, size: int, name: str, side: str) -> Tensor:
    ids = _as_1d(ids, name)
    if ids.is_floating_point() or ids.dtype == torch.bool:
        raise ValueError(f"'{name}' must hold integer ids, got dtype "
                         f"{ids.dtype}")
    ids = ids.long()
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= size):
        bad = int(ids.min()) if int(ids.min()) < 0 else int(ids.max())
        raise ValueError(f"'{name}' has {side} id {bad}, expected ids in "
                         f"[0, {size})")
    if torch.unique(ids).numel() != ids.numel():
        raise ValueError(f"'{name}' must not repeat an id, got "
                         f"{ids.numel() - torch.unique(ids).numel()} "
                         f"repeat(s)")
    return ids


def _as_values(value: Any, name: str, length: int) -> Tensor:
    value = _to_tensor(value)
    if value.dim() != 1 or value.numel() != length:
        raise ValueError(f"'{name}' must have shape ({length},), got "
                         f"{tuple(value.shape)}")
    if value.dtype == torch.bool or value.is_complex():
        raise ValueError(f"'{name}' must hold real numbers, got dtype "
                         f"{value.dtype}")
    if not value.is_floating_point():
        value = value.to(torch.get_default_dtype())
    bad = ~torch.isfinite(value)
    if bad.any():
        first = int(bad.nonzero()[0])
        raise ValueError(f"'{name}' must be finite, got {int(bad.sum())} "
                         f"NaN or infinite value(s), the first at position "
                         f"{first} ({float(value[first])})")
    return value


def _as_size(size: Any, name: str) -> int:
    if isinstance(size, Tensor):
        size = size.item() if size.numel() == 1 else size
    if isinstance(size, (bool, np.bool_)) or not isinstance(
            size, (int, np.integer)):
        raise ValueError(f"'{name}' must be a non-negative integer, got "
                         f"{size!r}")
    if size < 0:
        raise ValueError(f"'{name}' must be a non-negative integer, got "
                         f"{size}")
    return int(size)


def _as_keys(keys: Sequence, name: str, length: int) -> list:
    keys = list(keys)
    if len(keys) != length:
        raise ValueError(f"'{name}' must have one key per id ({length}), got "
                         f"{len(keys)}")
    return keys


def _infer_size(ids: Tensor, other: Optional[Tensor], dim: int) -> int:
    size = int(ids.max()) + 1 if ids.numel() > 0 else 0
    if other is not None and other.numel() > 0:
        size = max(size, int(torch.as_tensor(other)[dim].max()) + 1)
    return size


def _check_range(index: Tensor, num_rows: int, num_cols: int,
                 name: str) -> None:
    for dim, (size, side) in enumerate(((num_rows, 'row'),
                                        (num_cols, 'column'))):
        ids = index[dim]
        if ids.numel() == 0:
            continue
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= size:
            bad = low if low < 0 else high
            raise ValueError(f"'{name}' has {side} id {bad}, expected ids in "
                             f"[0, {size}) for {size} {side}s")


def _linear(index: Tensor, num_cols: int) -> Tensor:
    return index[0] * max(num_cols, 1) + index[1]


def _check_unique(index: Tensor, num_rows: int, num_cols: int,
                  name: str) -> None:
    key = _linear(index, num_cols)
    unique = torch.unique(key)
    if unique.numel() != key.numel():
        first = _first_duplicate(key)
        row, col = divmod(first, max(num_cols, 1))
        raise ValueError(f"'{name}' has {key.numel() - unique.numel()} "
                         f"duplicate entr(ies), the first at (row {row}, "
                         f"column {col}); pass duplicates='mean', 'sum', "
                         f"'first' or 'last' to from_triples to merge them")


def _first_duplicate(key: Tensor) -> int:
    sorted_key, _ = torch.sort(key)
    same = (sorted_key[1:] == sorted_key[:-1]).nonzero()
    return int(sorted_key[int(same[0])])


def _resolve_duplicates(edge_index: Tensor, edge_value: Tensor,
                        num_cols: int, policy: str) -> tuple[Tensor, Tensor]:
    if policy not in DUPLICATE_POLICIES:
        raise ValueError(f"'duplicates' must be one of {DUPLICATE_POLICIES}, "
                         f"got {policy!r}")
    key = _linear(edge_index, num_cols)
    unique, inverse = torch.unique(key, return_inverse=True)
    if unique.numel() == key.numel() or policy == 'error':
        if policy == 'error' and unique.numel() != key.numel():
            num_rows = int(edge_index[0].max()) + 1
            _check_unique(edge_index, num_rows, num_cols, 'row/col ids')
        return edge_index, edge_value

    num = unique.numel()
    position = torch.arange(key.numel())
    # Every policy keeps the entries in order of their first appearance.
    first = torch.full((num,), key.numel(), dtype=torch.long).scatter_reduce(
        0, inverse, position, 'amin', include_self=True)
    order = torch.argsort(first)
    if policy in ('first', 'last'):
        reduce = 'amin' if policy == 'first' else 'amax'
        pick = torch.full((num,), -1, dtype=torch.long).scatter_reduce(
            0, inverse, position, reduce, include_self=False)
        return edge_index[:, first[order]], edge_value[pick[order]]

    total = edge_value.new_zeros(num).index_add_(0, inverse, edge_value)
    if policy == 'mean':
        count = edge_value.new_zeros(num).index_add_(
            0, inverse, torch.ones_like(edge_value))
        total = total / count
    return edge_index[:, first[order]], total[order]


def _take_keys(keys: Sequence, ids: np.ndarray) -> np.ndarray:
    # Filled one by one: np.asarray would split tuple keys into columns.
    out = np.empty(len(ids), dtype=object)
    for i, j in enumerate(ids.tolist()):
        out[i] = keys[j]
    return out


def _factorize(keys: np.ndarray) -> tuple[list, np.ndarray]:
    if len(keys) and any(k is None or (isinstance(k, float) and np.isnan(k))
                         for k in keys):
        raise ValueError('row and column keys must not be missing (NaN or '
                         'None)')
    try:
        unique, ids = np.unique(keys, return_inverse=True)
    except TypeError:  # Mixed, unsortable keys: order of first appearance.
        seen: dict = {}
        ids = np.array([seen.setdefault(k, len(seen)) for k in keys])
        unique = list(seen)
    return [k.item() if isinstance(k, np.generic) else k
            for k in unique], np.asarray(ids, dtype=np.int64).reshape(-1)


def _pick_edge_type(data: Any, value_key: str) -> tuple:
    candidates = [t for t in data.edge_types
                  if t[0] != t[2] and value_key in data[t]]
    # Drop reverse edge types that PyG's ToUndirected adds.
    forward = [t for t in candidates
               if not t[1].startswith('rev_') and not t[1].endswith('_by')]
    chosen = forward or candidates
    if len(chosen) != 1:
        raise ValueError(f"cannot tell which edge type holds the matrix: "
                         f"found {chosen or data.edge_types} with attribute "
                         f"{value_key!r}; pass edge_type=(src, rel, dst)")
    return chosen[0]
