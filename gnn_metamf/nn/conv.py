"""Message layers on the row-column graph of a matrix.

A layer sees three kinds of hidden state for a batch of matrices: one vector
per row ``x_row`` (N, C), one per column ``x_col`` (M, C) and one per
observed entry ``x_edge`` (E, C), and returns new states of the same shapes.
All reductions go through :class:`~gnn_metamf.nn.ops.BipartiteOps`, so they
are per row, per column or per matrix, never across the matrices of a batch.

To write a new layer, subclass :class:`RowColLayer`, take ``channels`` as the
first constructor argument, implement :meth:`RowColLayer.forward`, and either
pass instances to :class:`~gnn_metamf.nn.encoder.Encoder` (``layers=[...]``)
or register the class under a name with :func:`register_layer` and pass the
name. A layer must be equivariant to permutations of rows and of columns and
invariant to the order of entries; sums and means over entries are.
"""
from __future__ import annotations

from typing import Callable, Dict, Type

import torch
from torch import Tensor
from torch.nn import Linear

from .ops import BipartiteOps

__all__ = [
    'RowColLayer',
    'ExchangeableLayer',
    'NodeMessageLayer',
    'LAYERS',
    'register_layer',
    'make_layer',
]

#: Layer classes by name, for ``Encoder(layer='name')`` and the command line.
LAYERS: Dict[str, Type[RowColLayer]] = {}


def register_layer(name: str) -> Callable[[Type], Type]:
    r"""Class decorator that makes a :class:`RowColLayer` available by
    ``name``."""
    def wrap(cls: Type) -> Type:
        if not (isinstance(cls, type) and issubclass(cls, RowColLayer)):
            raise TypeError(f'register_layer expects a RowColLayer subclass, '
                            f'got {cls!r}')
        LAYERS[name] = cls
        return cls
    return wrap


def make_layer(layer, channels: int, **kwargs) -> RowColLayer:
    r"""Builds a layer from a registered name, a class or an instance."""
    if isinstance(layer, RowColLayer):
        return layer
    if isinstance(layer, str):
        if layer not in LAYERS:
            raise ValueError(f'unknown layer {layer!r}; registered layers '
                             f'are {sorted(LAYERS)}')
        layer = LAYERS[layer]
    if isinstance(layer, type) and issubclass(layer, RowColLayer):
        return layer(channels, **kwargs)
    raise TypeError(f'expected a layer name, a RowColLayer subclass or '
                    f'instance, got {layer!r}')


class RowColLayer(torch.nn.Module):
    r"""Base class of a message layer on the row-column graph.

    Args:
        channels (int): Width ``C`` of every hidden state.

    Shapes:
        - **input:** row states :math:`(N, C)`, column states
          :math:`(M, C)`, entry states :math:`(E, C)`, and the
          :class:`BipartiteOps` of the batch
        - **output:** new row, column and entry states, same shapes
    """
    #: Whether :meth:`forward` takes ``inplace=True``: without autograd,
    #: overwrite ``x_edge`` with the new entry states instead of allocating
    #: new ones. The encoder asks for it on the states it owns.
    supports_inplace: bool = False

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels

    def forward(self, x_row: Tensor, x_col: Tensor, x_edge: Tensor,
                ops: BipartiteOps) -> tuple[Tensor, Tensor, Tensor]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}({self.channels})'


@register_layer('exchangeable')
class ExchangeableLayer(RowColLayer):
    r"""The exchangeable matrix layer of Hartford et al., "Deep Models of
    Interactions Across Sets" (ICML 2018), on the observed entries only.

    Each entry's state is updated from itself, the mean over its row, the
    mean over its column and the mean over its whole matrix:

    .. math::
        \mathbf{x}'_{ij} = \mathbf{x}_{ij} + \sigma\Big(
        \mathbf{W}_1 \mathbf{x}_{ij}
        + \mathbf{W}_2 \tfrac{1}{|\mathcal{N}(i)|}
          \sum_{j' \in \mathcal{N}(i)} \mathbf{x}_{ij'}
        + \mathbf{W}_3 \tfrac{1}{|\mathcal{N}(j)|}
          \sum_{i' \in \mathcal{N}(j)} \mathbf{x}_{i'j}
        + \mathbf{W}_4 \tfrac{1}{|\mathcal{S}|}
          \sum_{(i', j') \in \mathcal{S}} \mathbf{x}_{i'j'}
        + \mathbf{b} \Big)

    where :math:`\mathcal{S}` are the matrix's observed entries and
    :math:`\mathcal{N}(i)` the columns observed in row :math:`i`. Row and
    column states pass through unchanged.

    Without autograd, the entries are updated in blocks that stay in
    cache, and with ``inplace=True`` in ``x_edge`` itself.

    Args:
        channels (int): Width ``C`` of the entry states.
    """
    supports_inplace = True

    def __init__(self, channels: int):
        super().__init__(channels)
        self.lin_self = Linear(channels, channels)
        self.lin_row = Linear(channels, channels, bias=False)
        self.lin_col = Linear(channels, channels, bias=False)
        self.lin_graph = Linear(channels, channels, bias=False)
        self.reset_parameters()

    def reset_parameters(self):
        for lin in (self.lin_self, self.lin_row, self.lin_col,
                    self.lin_graph):
            lin.reset_parameters()

    def forward(self, x_row, x_col, x_edge, ops, inplace: bool = False):
        # Project the pooled states before gathering them to the entries:
        # C x C work per row, column and matrix instead of per entry. The
        # matrix term and the bias are the same for all entries of a row,
        # so they join the row term before the gather.
        row_mean, col_mean, graph_mean = ops.pool(x_edge)
        graph = self.lin_graph(graph_mean)  # (B, C)
        row = (self.lin_row(row_mean) + self.lin_self.bias +
               graph.index_select(0, ops.row_batch))  # (N, C)
        col = self.lin_col(col_mean)  # (M, C)
        weight = self.lin_self.weight.t()  # (C, C)
        if torch.is_grad_enabled() or ops.reference:
            out = ops.gather_row(row) + ops.gather_col(col)  # (E, C)
            # In place on fresh tensors; autograd keeps what it needs.
            out = out.addmm_(x_edge, weight).relu_()
            return x_row, x_col, x_edge + out
        out = x_edge if inplace else torch.empty_like(x_edge)
        _entry_update(x_edge, row, col, weight, ops, out)
        return x_row, x_col, out

    @torch.no_grad()
    def forward_embedded(self, z: Tensor, embed: Linear,
                         ops: BipartiteOps) -> Tensor:
        r"""The entry states of this layer applied to ``embed(z[:, None])``
        (a ``Linear(1, C)``), without materialising the embedded states and
        without autograd. Those are affine in one number per entry,
        :math:`x_{ij} = z_{ij}\mathbf{w} + \mathbf{b}_0`, so their means
        follow from the means of :math:`z` and :math:`x W^\top` from
        :math:`z\,(W\mathbf{w})`: no :math:`(E, C)` product, no pass over
        :math:`(E, C)` states before the update. Returns ``(E, C)``; row and
        column states stay as they were (this layer leaves them alone)."""
        w, b0 = embed.weight[:, 0], embed.bias  # (C,) each
        # Row, column and matrix means of z and of 1 (0 when empty).
        z1 = torch.stack([z, torch.ones_like(z)], -1)  # (E, 2)
        basis = torch.stack([w, b0])  # (2, C)
        row_mean, col_mean, graph_mean = (m @ basis for m in ops.pool(z1))
        weight = self.lin_self.weight  # (C, C)
        graph = self.lin_graph(graph_mean)  # (B, C)
        row = (self.lin_row(row_mean) + self.lin_self.bias + weight @ b0 +
               graph.index_select(0, ops.row_batch))  # (N, C)
        col = self.lin_col(col_mean)  # (M, C)
        slope = weight @ w  # (C,): x W^T = z slope + b0 W^T

        out = z.new_empty(z.size(0), self.channels)  # (E, C)
        block = _block_rows(z, self.channels)
        buf = z.new_empty(2, min(block, max(1, z.size(0))), self.channels)
        for start in range(0, z.size(0), block):
            stop = min(start + block, z.size(0))
            b, c = buf[0, :stop - start], buf[1, :stop - start]
            zb = z[start:stop].unsqueeze(-1)  # (block, 1)
            torch.index_select(row, 0, ops.row[start:stop], out=b)
            torch.index_select(col, 0, ops.col[start:stop], out=c)
            b.add_(c).addcmul_(zb, slope).relu_().add_(b0)
            torch.addcmul(b, zb, w, out=out[start:stop])  # + z w
        return out


@register_layer('node')
class NodeMessageLayer(RowColLayer):
    r"""Messages between row nodes and column nodes along the observed
    entries, with the entry states as edge features.

    .. math::
        \mathbf{r}'_i = \mathbf{r}_i + \sigma\Big(\mathbf{W}_1 \mathbf{r}_i
        + \tfrac{1}{|\mathcal{N}(i)|} \sum_{j \in \mathcal{N}(i)}
        \big(\mathbf{W}_2 \mathbf{c}_j + \mathbf{W}_3 \mathbf{x}_{ij}\big)
        + \mathbf{b}\Big)

    and symmetrically for a column :math:`\mathbf{c}_j` from its rows, both
    from the states before the layer. Entry states pass through unchanged.
    A row with no entry receives no message.

    Args:
        channels (int): Width ``C`` of every state.
    """
    def __init__(self, channels: int):
        super().__init__(channels)
        self.row_self = Linear(channels, channels)
        self.row_from_col = Linear(channels, channels, bias=False)
        self.row_from_edge = Linear(channels, channels, bias=False)
        self.col_self = Linear(channels, channels)
        self.col_from_row = Linear(channels, channels, bias=False)
        self.col_from_edge = Linear(channels, channels, bias=False)
        self.reset_parameters()

    def reset_parameters(self):
        for lin in (self.row_self, self.row_from_col, self.row_from_edge,
                    self.col_self, self.col_from_row, self.col_from_edge):
            lin.reset_parameters()

    def forward(self, x_row, x_col, x_edge, ops):
        row_deg = ops.row_degree.clamp(min=1).unsqueeze(-1)  # (N, 1)
        col_deg = ops.col_degree.clamp(min=1).unsqueeze(-1)  # (M, 1)
        to_row = (ops.rows_from_cols(self.row_from_col(x_col)) +
                  ops.row_sum(self.row_from_edge(x_edge))) / row_deg
        to_col = (ops.cols_from_rows(self.col_from_row(x_row)) +
                  ops.col_sum(self.col_from_edge(x_edge))) / col_deg
        new_row = x_row + torch.relu(self.row_self(x_row) + to_row)
        new_col = x_col + torch.relu(self.col_self(x_col) + to_col)
        return new_row, new_col, x_edge


def _entry_update(x_edge: Tensor, row: Tensor, col: Tensor, weight: Tensor,
                  ops: BipartiteOps, out: Tensor) -> None:
    r"""``out = x + relu(x W + row[i] + col[j])`` for every entry, in blocks
    of entries that stay in cache while all terms are added: without
    autograd, a few passes over memory instead of one per term. ``out`` may
    be ``x_edge`` itself."""
    num, channels = x_edge.shape
    block = _block_rows(x_edge, channels)
    buf = x_edge.new_empty(2, min(block, num), channels)
    for start in range(0, num, block):
        stop = min(start + block, num)
        b, c = buf[0, :stop - start], buf[1, :stop - start]  # (block, C)
        torch.index_select(row, 0, ops.row[start:stop], out=b)
        torch.index_select(col, 0, ops.col[start:stop], out=c)
        x = x_edge[start:stop]
        b.add_(c).addmm_(x, weight).relu_()
        torch.add(x, b, out=out[start:stop])


def _block_rows(like: Tensor, channels: int) -> int:
    # On a GPU one block: there, launches cost more than memory passes.
    if like.device.type != 'cpu':
        return max(1, like.size(0))
    return max(1, _BLOCK_BYTES // max(1, channels * like.element_size()))


# Bytes of entry states per block on CPU: well inside a core's L2 cache.
_BLOCK_BYTES = 1 << 19
