"""Sums over the entries of a (batched) bipartite matrix graph.

Every layer and every refinement step of the model reduces over the observed
entries of each row, each column or each whole matrix. :class:`BipartiteOps`
builds the index structures for this once per forward pass and offers two
interchangeable backends:

* ``'scatter'``: gathers and :func:`torch_geometric.utils.scatter` with an
  explicit ``dim_size``; the readable reference.
* ``'sparse'``: compressed sparse row (CSR) matrices multiplied with dense
  features (``torch.mm``), which on CPU is several times faster than a
  scatter and never materialises a per-entry copy of the gathered features.
  Gathers from rows or columns to the entries are ``index_select`` calls
  whose backward pass is the matching CSR sum (and vice versa). On CPU,
  sums of per-entry features use the faster kernels of :mod:`scipy.sparse`
  (zero-copy views of the tensors), and products whose gathered features
  outgrow the cache run tile by tile; see :data:`CPU_KERNELS`,
  :data:`SCATTER_BYTES` and :data:`TILE_BYTES`.

Both give the same result within float tolerance (tested), run on CPU and
CUDA, and back-propagate into the dense operand. The backend also selects
the kernels of the refinement and of the predictive variance
(:mod:`gnn_metamf.nn.refine`): fast ones with ``'sparse'``, the readable
reference with ``'scatter'`` (see :attr:`BipartiteOps.reference`).
"""
from __future__ import annotations

import copy
import math
import warnings
from typing import Optional

import numpy as np
import scipy.sparse
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch_geometric.utils import scatter

__all__ = ['BipartiteOps', 'BACKENDS', 'PairDot']

BACKENDS = ('sparse', 'scatter')

#: Whether the sparse backend sums per-entry features on CPU with the
#: kernels of :mod:`scipy.sparse` (see :meth:`_Compressed.sum`); False
#: leaves every sum to PyTorch's CSR product. Results agree within float
#: tolerance either way.
CPU_KERNELS = True

#: Largest ``(S, D)`` output, in bytes, that an unsorted CPU sum adds into
#: entry by entry (scipy's CSC product). Beyond it the scattered additions
#: leave the cache, and PyTorch's CSR product, which gathers, was faster
#: (10^7 entries: 1.0 s against 2.3 s, and 1.8 s for a tiled CSC product).
SCATTER_BYTES = 16 << 20

#: Size, in bytes, beyond which the other side's features of a weighted
#: product are cut into tiles that stay in cache (CPU; see
#: :meth:`_Compressed.product`). Chosen from measurements at 10^6 and 10^7
#: entries (4-8 MiB were best) on a CPU with 2 MiB of L2 and 32 MiB of L3.
TILE_BYTES = 8 << 20


class BipartiteOps:
    r"""Index structures and reductions of a batch of ``B`` matrices with
    ``N`` rows, ``M`` columns and ``E`` observed entries in all.

    Args:
        edge_index (torch.Tensor): Row and column id of each entry, shape
            ``(2, E)``.
        num_rows (int): ``N``, rows of all matrices together.
        num_cols (int): ``M``, columns of all matrices together.
        row_batch (torch.Tensor): Matrix id of each row, shape ``(N,)``.
        col_batch (torch.Tensor): Matrix id of each column, shape ``(M,)``.
        num_graphs (int): ``B``.
        backend (str): ``'sparse'`` or ``'scatter'``.
            (default: :obj:`'sparse'`)

    Attributes:
        reference (bool): Whether this is the reference backend
            (``'scatter'``); the model then also uses its reference dense
            kernels.
        row_degree, col_degree (torch.Tensor): Entries per row ``(N,)`` and
            per column ``(M,)``, as floats.
        graph_entries (torch.Tensor): Entries per matrix, ``(B,)``.
        edge_batch (torch.Tensor): Matrix id of each entry, ``(E,)``.
    """
    def __init__(
        self,
        edge_index: Tensor,
        num_rows: int,
        num_cols: int,
        row_batch: Tensor,
        col_batch: Tensor,
        num_graphs: int,
        backend: str = 'sparse',
    ):
        if backend not in BACKENDS:
            raise ValueError(f"'backend' must be one of {BACKENDS}, got "
                             f"{backend!r}")
        self.backend = backend
        self.reference = backend == 'scatter'
        self.row, self.col = edge_index[0], edge_index[1]
        self.num_rows, self.num_cols = num_rows, num_cols
        self.num_graphs = num_graphs
        self.row_batch, self.col_batch = row_batch, col_batch
        self.edge_batch = row_batch.index_select(0, self.row)  # (E,)
        self.rows_per_graph = scatter(torch.ones_like(row_batch),
                                      row_batch, 0, num_graphs, 'sum')
        self.cols_per_graph = scatter(torch.ones_like(col_batch),
                                      col_batch, 0, num_graphs, 'sum')

        if backend == 'scatter':
            ones = torch.ones(self.row.numel(), device=self.row.device)
            self.row_degree = scatter(ones, self.row, 0, num_rows, 'sum')
            self.col_degree = scatter(ones, self.col, 0, num_cols, 'sum')
            self.graph_entries = scatter(ones, self.edge_batch, 0,
                                         num_graphs, 'sum')
            return
        # Entries grouped by row (for row sums) and by column (for column
        # sums); the permutations map sorted positions to entry ids.
        self._by_row = _Compressed(self.row, self.col, num_rows, num_cols)
        self._by_col = _Compressed(self.col, self.row, num_cols, num_rows)
        self._by_graph = _Compressed(self.edge_batch, None, num_graphs)
        self._rows_by_graph: Optional[_Compressed] = None
        dtype = torch.get_default_dtype()
        self.row_degree = self._by_row.counts.to(dtype)
        self.col_degree = self._by_col.counts.to(dtype)
        self.graph_entries = self._by_graph.counts.to(dtype)

    @classmethod
    def from_graph(cls, graph, backend: str = 'sparse') -> BipartiteOps:
        r"""Builds the structures of a :class:`MatrixGraph` or a batch."""
        return cls(graph.edge_index, graph.num_rows, graph.num_cols,
                   graph.row_batch, graph.col_batch, graph.num_matrices,
                   backend)

    def in_cache_order(self, node_bytes: int
                       ) -> tuple[BipartiteOps, Optional[Tensor]]:
        r"""The same entries reordered so that consecutive entries touch
        few rows and columns, when the states of all rows or of all columns
        (``node_bytes`` bytes each) would not fit in :data:`TILE_BYTES`.

        Rows are cut into tiles of ``T = TILE_BYTES // node_bytes`` rows
        and columns likewise; entries are ordered by row tile, then column
        tile, keeping their order inside a tile. A pass over the entries
        (gathering row and column states, summing into rows and columns)
        then works on one tile's states at a time, in cache, instead of
        jumping across all of them. Results equal those in the original
        order up to float rounding.

        Returns the reordered operations and ``perm`` (E,), the original id
        of each entry in the new order (per-entry inputs ``x`` are passed
        as ``x[perm]``), or ``(self, None)`` when the states fit or the
        backend is the reference one or not on CPU.
        """
        per_tile = max(1, TILE_BYTES // max(1, node_bytes))
        if self.reference or self.row.device.type != 'cpu' or \
                max(self.num_rows, self.num_cols) <= per_tile:
            return self, None
        col_tiles = math.ceil(self.num_cols / per_tile)
        num_tiles = math.ceil(self.num_rows / per_tile) * col_tiles
        tile = (torch.div(self.row, per_tile, rounding_mode='floor') *
                col_tiles + torch.div(self.col, per_tile,
                                      rounding_mode='floor'))  # (E,)
        perm = _stable_argsort(tile, num_tiles)  # new position -> old id
        inverse = torch.empty_like(perm)  # old id -> new position
        inverse[perm] = torch.arange(perm.numel(), device=perm.device)
        out = copy.copy(self)
        out.row, out.col, out.edge_batch = (
            t.index_select(0, perm) for t in (self.row, self.col,
                                              self.edge_batch))
        out._by_row, out._by_col, out._by_graph = (
            c.permuted(perm, inverse, local=True)
            for c in (self._by_row, self._by_col, self._by_graph))
        return out, perm

    # ------------------------------------------------------------------
    # Entry -> row, column or matrix.

    def row_sum(self, x: Tensor) -> Tensor:
        r"""Sum of per-entry features over each row: ``(E, D) -> (N, D)``."""
        if self.backend == 'scatter':
            return scatter(x, self.row, 0, self.num_rows, 'sum')
        return _SegmentSum.apply(x, self._by_row)

    def col_sum(self, x: Tensor) -> Tensor:
        r"""Sum over each column: ``(E, D) -> (M, D)``."""
        if self.backend == 'scatter':
            return scatter(x, self.col, 0, self.num_cols, 'sum')
        return _SegmentSum.apply(x, self._by_col)

    def graph_sum(self, x: Tensor) -> Tensor:
        r"""Sum over each matrix: ``(E, D) -> (B, D)``."""
        if self.backend == 'scatter':
            return scatter(x, self.edge_batch, 0, self.num_graphs, 'sum')
        return _SegmentSum.apply(x, self._by_graph)

    def row_mean(self, x: Tensor) -> Tensor:
        r"""Mean over each row's entries, 0 for an empty row:
        ``(E, D) -> (N, D)``."""
        return self.row_sum(x) / self.row_degree.clamp(min=1).unsqueeze(-1)

    def col_mean(self, x: Tensor) -> Tensor:
        r"""Mean over each column's entries: ``(E, D) -> (M, D)``."""
        return self.col_sum(x) / self.col_degree.clamp(min=1).unsqueeze(-1)

    def graph_mean(self, x: Tensor) -> Tensor:
        r"""Mean over each matrix's entries: ``(E, D) -> (B, D)``."""
        return (self.graph_sum(x) /
                self.graph_entries.clamp(min=1).unsqueeze(-1))

    def pool(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        r""":meth:`row_mean`, :meth:`col_mean` and :meth:`graph_mean` of
        ``x`` (E, D) at once. With the sparse backend the matrix sums are
        taken over the row sums: one pass over the entries fewer."""
        if self.backend == 'scatter':
            return self.row_mean(x), self.col_mean(x), self.graph_mean(x)
        if self._rows_by_graph is None:
            self._rows_by_graph = _Compressed(self.row_batch, None,
                                              self.num_graphs)
        row_sum = self.row_sum(x)  # (N, D)
        graph_sum = _SegmentSum.apply(row_sum, self._rows_by_graph)
        return (row_sum / self.row_degree.clamp(min=1).unsqueeze(-1),
                self.col_mean(x),
                graph_sum / self.graph_entries.clamp(min=1).unsqueeze(-1))

    # ------------------------------------------------------------------
    # Row, column or matrix -> entry: the adjoints of the sums above.

    def gather_row(self, x_row: Tensor) -> Tensor:
        r"""Each entry's row feature, ``x_row[row]``: ``(N, D) -> (E, D)``.
        """
        if self.backend == 'scatter':
            return x_row[self.row]
        return _Gather.apply(x_row, self._by_row)

    def gather_col(self, x_col: Tensor) -> Tensor:
        r"""Each entry's column feature: ``(M, D) -> (E, D)``."""
        if self.backend == 'scatter':
            return x_col[self.col]
        return _Gather.apply(x_col, self._by_col)

    def gather_graph(self, x_graph: Tensor) -> Tensor:
        r"""Each entry's matrix feature: ``(B, D) -> (E, D)``."""
        if self.backend == 'scatter':
            return x_graph[self.edge_batch]
        return _Gather.apply(x_graph, self._by_graph)

    # ------------------------------------------------------------------
    # Column features -> rows and back, weighted by a value per entry.

    def rows_from_cols(self, x_col: Tensor,
                       edge_weight: Optional[Tensor] = None) -> Tensor:
        r"""``out[i] = sum_{j: (i, j) observed} w_ij * x_col[j]``:
        ``(M, D) -> (N, D)``, that is ``A_w @ x_col`` for the sparse matrix
        ``A_w`` of entry weights (ones when ``edge_weight`` is None)."""
        if self.backend == 'scatter':
            msg = x_col[self.col]  # (E, D)
            if edge_weight is not None:
                msg = msg * edge_weight.unsqueeze(-1)
            return scatter(msg, self.row, 0, self.num_rows, 'sum')
        return _Product.apply(x_col, edge_weight, self._by_row,
                              self._by_col)

    def cols_from_rows(self, x_row: Tensor,
                       edge_weight: Optional[Tensor] = None) -> Tensor:
        r"""``out[j] = sum_{i: (i, j) observed} w_ij * x_row[i]``:
        ``(N, D) -> (M, D)``."""
        if self.backend == 'scatter':
            msg = x_row[self.row]  # (E, D)
            if edge_weight is not None:
                msg = msg * edge_weight.unsqueeze(-1)
            return scatter(msg, self.col, 0, self.num_cols, 'sum')
        return _Product.apply(x_row, edge_weight, self._by_col,
                              self._by_row)


class PairDot:
    r"""Dot products of row and column features at a fixed list of
    (row, column) pairs, such as the query entries of a matrix:

    .. math::
        \mathrm{out}_q = \mathbf{f}_{i_q}^\top \mathbf{g}_{j_q}

    computed by a sampled dense-dense product
    (:func:`torch.sparse.sampled_addmm`) on a CSR pattern of the pairs, so
    that no ``(Q, D)`` copy of the gathered features is ever made. Without
    gradients (used for predictions and their variances).

    Args:
        index (torch.Tensor): Row and column id of each pair, ``(2, Q)``.
        num_rows (int): ``N``.
        num_cols (int): ``M``.

    Shapes:
        - **input:** row features :math:`(N, D)`, column features
          :math:`(M, D)`
        - **output:** :math:`(Q,)`, in the order of ``index``
    """
    def __init__(self, index: Tensor, num_rows: int, num_cols: int):
        row, col = index[0], index[1]
        self.num_pairs = row.numel()
        key = row * max(num_cols, 1) + col  # (Q,)
        # The sampled product answers each position of the pattern once:
        # pairs are sorted and repeats merged, then mapped back.
        self.inverse = None
        if not _is_sorted(key, strict=True):
            key, self.inverse = torch.unique(key, sorted=True,
                                             return_inverse=True)
        self.col = key % max(num_cols, 1)  # (U,)
        counts = torch.bincount(key // max(num_cols, 1), minlength=num_rows)
        self.crow = torch.zeros(num_rows + 1, dtype=torch.long,
                                device=row.device)
        self.crow[1:] = torch.cumsum(counts, 0)
        self.shape = (num_rows, num_cols)
        self._pattern: dict = {}

    @torch.no_grad()
    def __call__(self, x_row: Tensor, x_col: Tensor) -> Tensor:
        if self.num_pairs == 0:
            return x_row.new_zeros(0)
        if x_row.dtype not in self._pattern:
            with warnings.catch_warnings():
                warnings.filterwarnings('ignore', message='Sparse CSR tensor')
                self._pattern[x_row.dtype] = torch.sparse_csr_tensor(
                    self.crow, self.col, x_row.new_zeros(self.col.numel()),
                    self.shape, check_invariants=False)
        out = torch.sparse.sampled_addmm(
            self._pattern[x_row.dtype], x_row.contiguous(),
            x_col.contiguous().t(), beta=0.0).values()  # (U,), sorted
        return out if self.inverse is None else out.index_select(
            0, self.inverse)


class _Compressed:
    r"""Entries grouped by one side (rows, columns or matrices) as CSR.

    :meth:`incidence` is the ``(S, E)`` matrix that sums per-entry features
    over each group; :meth:`matrix` the ``(S, T)`` matrix of entry weights
    that sums features of the other side. Column indices are sorted within
    each CSR row, as the format requires. Entries already in order (a
    matrix stored row by row, a batch matrix by matrix) need no sort, and
    one sort serves both matrices when it can.
    """
    def __init__(self, key: Tensor, other: Optional[Tensor], size: int,
                 other_size: int = 0):
        self.key = key  # (E,)
        self.size, self.other_size = size, other_size
        self.num_entries = key.numel()
        self.counts = torch.bincount(key, minlength=size)  # (S,)
        self.crow = torch.zeros(size + 1, dtype=torch.long,
                                device=key.device)
        self.crow[1:] = torch.cumsum(self.counts, 0)
        # perm_pair sorts by (key, other), for the weighted (S, T) matrix;
        # perm by key with entry ids ascending in each group, for the
        # (S, E) incidence. None stands for the identity.
        key_sorted = _is_sorted(key)
        self.perm_pair = perm = None
        if other is not None:
            if _is_sorted(other):
                # A stable sort by key alone keeps `other` ascending within
                # each group (the columns of a matrix stored row by row).
                if not key_sorted:
                    self.perm_pair = perm = _stable_argsort(key, size)
            else:
                pair = key * max(other_size, 1) + other
                if not _is_sorted(pair):
                    self.perm_pair = _stable_argsort(pair, size *
                                                     max(other_size, 1))
            self.other = _take(other, self.perm_pair)  # (E,)
        if perm is None and not key_sorted:
            if self.perm_pair is not None and _ascending_within(
                    self.perm_pair, key.index_select(0, self.perm_pair)):
                perm = self.perm_pair
            else:
                perm = _stable_argsort(key, size)
        self.perm_is_identity = perm is None
        self.perm = (torch.arange(self.num_entries, device=key.device)
                     if perm is None else perm)  # (E,)
        # Whether consecutive entries fall into few groups (tile order, see
        # BipartiteOps.in_cache_order): sums may then add entry by entry
        # whatever the number of groups.
        self.local = False
        self._cache: dict = {}

    def permuted(self, perm: Tensor, inverse: Tensor,
                 local: bool) -> _Compressed:
        r"""The same groups for the entries reordered by ``perm`` (new
        position -> old id; ``inverse`` is the other way round). Within a
        group the entries keep their relative order when ``perm`` keeps
        it, as a tile order of row-sorted entries does."""
        out = copy.copy(self)
        out.key = self.key.index_select(0, perm)
        out.perm_pair = (inverse if self.perm_pair is None else
                         inverse.index_select(0, self.perm_pair))
        out.perm = inverse.index_select(0, self.perm)
        out.perm_is_identity = False
        out.local = local
        out._cache = {}
        return out

    def _csr(self, col_indices: Tensor, values: Tensor,
             num_cols: int) -> Tensor:
        with warnings.catch_warnings():
            # CSR support is marked beta in PyTorch; the ops used here
            # (construction and mm) are stable since 2.0.
            warnings.filterwarnings('ignore', message='Sparse CSR tensor')
            return torch.sparse_csr_tensor(
                self.crow, col_indices, values, (self.size, num_cols),
                check_invariants=False)

    def sum(self, x: Tensor) -> Tensor:
        r"""Sums of the per-entry features ``x`` (E, D) over each group:
        ``(S, D)``, that is ``incidence @ x``.

        On CPU, in float32 or float64, two kernels of :mod:`scipy.sparse`
        read ``x`` front to back, which is several times faster than
        PyTorch's CSR product (measured by ``scripts/bench_adapt.py``):
        the CSR product when the entries are already grouped (each group
        sums a contiguous slice of ``x``), else, while the ``(S, D)`` sums
        fit in :data:`SCATTER_BYTES` or the entries come in tile order
        (:meth:`BipartiteOps.in_cache_order`), the CSC product, which adds
        each entry into its group's sum in cache. Larger unsorted sums,
        other devices and dtypes use PyTorch's CSR product."""
        if not CPU_KERNELS or x.device.type != 'cpu' or x.dim() != 2 or \
                x.dtype not in (torch.float32, torch.float64) or \
                self.num_entries == 0:
            return torch.mm(self.incidence(x), x)
        if self.perm_is_identity:
            kind = 'csr'
        elif self.local or \
                self.size * x.size(1) * x.element_size() <= SCATTER_BYTES:
            kind = 'csc'
        else:
            return torch.mm(self.incidence(x), x)
        array = x.detach().contiguous().numpy()  # (E, D), no copy
        return torch.from_numpy(self._scipy(kind, x.dtype) @ array)

    def _scipy(self, kind: str, dtype: torch.dtype):
        r"""The ``(S, E)`` incidence as a :mod:`scipy.sparse` matrix,
        ``'csr'`` (entries grouped) or ``'csc'``, sharing the index
        memory of the tensors."""
        key = (kind, dtype)
        if key not in self._cache:
            shape = (self.size, self.num_entries)
            ones = torch.ones(self.num_entries, dtype=dtype).numpy()
            if kind == 'csr':  # group g sums entries crow[g]:crow[g + 1]
                matrix = scipy.sparse.csr_matrix(
                    (ones, np.arange(self.num_entries), self.crow.numpy()),
                    shape=shape)
            else:  # entry e adds into group key[e]
                matrix = scipy.sparse.csc_matrix(
                    (ones, self.key.numpy(),
                     np.arange(self.num_entries + 1)), shape=shape)
            self._cache[key] = matrix
        return self._cache[key]

    def incidence(self, like: Tensor) -> Tensor:
        key = ('incidence', like.dtype)
        if key not in self._cache:
            values = like.new_ones(self.num_entries)
            self._cache[key] = self._csr(self.perm, values, self.num_entries)
        return self._cache[key]

    def product(self, weight: Optional[Tensor], x: Tensor) -> Tensor:
        r"""``A_w @ x``: for each group, the sum over its entries of the
        entry weight times the other side's features ``x`` (T, D); returns
        ``(S, D)``.

        The product gathers a row of ``x`` per entry, in random order. On
        CPU, when ``x`` is larger than :data:`TILE_BYTES`, the columns of
        ``A_w`` are cut into tiles whose slice of ``x`` stays in cache, and
        the output accumulates tile by tile (each pass over it in order):
        about 2x (10^6 entries) to 3x (10^7) faster there."""
        width = self._tile_width(x)
        if width is None:
            return torch.mm(self.matrix(weight, x), x)
        out = x.new_zeros(self.size, x.size(1))
        for start, stop, matrix in self._tile_matrices(width, weight,
                                                       x.dtype):
            out.addmm_(matrix, x[start:stop])
        return out

    def _tile_width(self, x: Tensor) -> Optional[int]:
        r"""Columns per tile of ``A_w`` for features like ``x``, or None
        when one tile would hold them all (or not on CPU)."""
        if x.device.type != 'cpu' or x.dim() != 2 or self.other_size < 2:
            return None
        num = math.ceil(self.other_size * x.size(1) * x.element_size() /
                        TILE_BYTES)
        return None if num < 2 else math.ceil(self.other_size / num)

    def _tiles(self, width: int) -> list:
        r"""The column tiles of ``A_w``, ``width`` columns each: per tile,
        its columns ``start:stop``, its entries (positions in pair order,
        by group), its CSR row pointers and its entries' columns within
        the tile."""
        key = ('tiles', width)
        if key not in self._cache:
            num = math.ceil(self.other_size / width)
            tile = torch.div(self.other, width, rounding_mode='floor')
            order = _stable_argsort(tile, num)  # (E,), by tile then group
            bounds = torch.bincount(tile, minlength=num).cumsum(0).tolist()
            group = torch.repeat_interleave(
                torch.arange(self.size, device=tile.device), self.counts,
                output_size=self.num_entries)  # (E,), pair order
            tiles, begin = [], 0
            for t, end in enumerate(bounds):
                entries = order[begin:end]
                crow = torch.zeros(self.size + 1, dtype=torch.long,
                                   device=tile.device)
                crow[1:] = torch.bincount(group.index_select(0, entries),
                                          minlength=self.size).cumsum(0)
                start = t * width
                stop = min(start + width, self.other_size)
                tiles.append((start, stop, entries, crow,
                              self.other.index_select(0, entries) - start))
                begin = end
            self._cache[key] = tiles
        return self._cache[key]

    def _tile_matrices(self, width: int, weight: Optional[Tensor],
                       dtype: torch.dtype) -> list:
        r"""Per tile of :meth:`_tiles`, its columns and its ``(S, width)``
        CSR matrix of entry weights."""
        def build(values: Tensor) -> list:
            out = []
            for start, stop, entries, crow, cols in self._tiles(width):
                with warnings.catch_warnings():
                    warnings.filterwarnings('ignore',
                                            message='Sparse CSR tensor')
                    out.append((start, stop, torch.sparse_csr_tensor(
                        crow, cols, values.index_select(0, entries),
                        (self.size, stop - start), check_invariants=False)))
            return out
        return self._per_weight(f'tiles of {width}', weight, dtype, build)

    def matrix(self, weight: Optional[Tensor], like: Tensor) -> Tensor:
        r"""The ``(S, T)`` matrix of entry weights (ones for ``None``)."""
        return self._per_weight('matrix', weight, like.dtype, lambda values:
                                self._csr(self.other, values,
                                          self.other_size))

    def _per_weight(self, name: str, weight: Optional[Tensor],
                    dtype: torch.dtype, build):
        r"""``build(values)`` for the entry weights in pair order (ones for
        ``None``), kept: for ones, always; for a weight tensor, until
        another one comes or it changes in place, so that a loop that
        reuses one weight (the refinement's values) builds it once."""
        key = (name, weight is None, dtype)
        version = None if weight is None else weight._version
        kept = self._cache.get(key)
        if kept is not None and kept[0] is weight and kept[1] == version:
            return kept[2]
        values = (torch.ones(self.num_entries, dtype=dtype,
                             device=self.key.device) if weight is None else
                  _take(weight, self.perm_pair).to(dtype))  # (E,)
        built = build(values)
        self._cache[key] = (weight, version, built)
        return built


def _is_sorted(x: Tensor, strict: bool = False) -> bool:
    if x.numel() < 2:
        return True
    return bool((x[1:] > x[:-1] if strict else x[1:] >= x[:-1]).all())


def _stable_argsort(key: Tensor, bound: int) -> Tensor:
    r"""Stable argsort of non-negative ``key`` < ``bound``; 32-bit keys when
    they fit, which sort about twice as fast."""
    if bound < 2 ** 31:
        key = key.to(torch.int32)
    return torch.argsort(key, stable=True)


def _ascending_within(perm: Tensor, group: Tensor) -> bool:
    r"""Whether ``perm`` ascends inside each run of equal ``group``."""
    if perm.numel() < 2:
        return True
    return bool(((perm[1:] > perm[:-1]) | (group[1:] != group[:-1])).all())


def _take(x: Tensor, perm: Optional[Tensor]) -> Tensor:
    return x if perm is None else x.index_select(0, perm)


class _SegmentSum(torch.autograd.Function):
    r"""Sums per-entry features over groups (:meth:`_Compressed.sum`); the
    backward pass is a gather, with no sparse transpose."""
    @staticmethod
    def forward(ctx, x: Tensor, groups: _Compressed) -> Tensor:
        ctx.groups = groups
        return groups.sum(x)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        return grad.index_select(0, ctx.groups.key), None


class _Gather(torch.autograd.Function):
    r"""Copies each group's features to its entries (``index_select``);
    the backward pass is the group sum by a CSR product."""
    @staticmethod
    def forward(ctx, x: Tensor, groups: _Compressed) -> Tensor:
        ctx.groups = groups
        return x.index_select(0, groups.key)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        return ctx.groups.sum(grad.contiguous()), None


class _Product(torch.autograd.Function):
    r"""``A_w @ x`` (:meth:`_Compressed.product` of ``groups``); the
    backward pass is the product with the transpose, which is the other
    side's matrix with the same weights (``transpose``), not a conversion
    of ``A_w``."""
    @staticmethod
    def forward(ctx, x: Tensor, weight: Optional[Tensor],
                groups: _Compressed, transpose: _Compressed) -> Tensor:
        ctx.weight, ctx.transpose = weight, transpose
        return groups.product(weight, x)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        return (ctx.transpose.product(ctx.weight, grad.contiguous()),
                None, None, None)
