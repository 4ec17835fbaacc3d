"""The encoder: a stack of row-column message layers and a read-out."""
from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import Tensor
from torch.nn import Linear, ModuleList

from .conv import ExchangeableLayer, RowColLayer, make_layer
from .ops import BipartiteOps

__all__ = ['Encoder']

LayerSpec = Union[str, type, RowColLayer]


class Encoder(torch.nn.Module):
    r"""Reads the (normalised) observed entries of a batch of matrices and
    returns a representation of every row, every column and every matrix.

    Each entry starts from a linear embedding of its value; row and column
    states start at zero. After the layers, a row is described by its state,
    the mean state of its entries and :math:`\log(1 + \deg)`; a matrix by the
    mean state of its entries and the log of its mean row and column degree.
    A row with no entry is thus described by zeros, and the prior head
    decides its prior from the matrix context alone.

    Args:
        hidden_channels (int): Width ``C`` of the hidden states.
            (default: :obj:`64`)
        num_layers (int): Number of layers when ``layer`` is a name or class.
            (default: :obj:`4`)
        layer (str, type or list): A registered layer name
            (``'exchangeable'``, ``'node'``), a :class:`RowColLayer`
            subclass, or a list of names, classes or instances used in order.
            (default: :obj:`'exchangeable'`)

    Shapes:
        - **input:** normalised values :math:`(E,)`, :class:`BipartiteOps`
        - **output:** rows :math:`(N, 2C + 1)`, columns :math:`(M, 2C + 1)`,
          matrices :math:`(B, C + 2)`
    """
    def __init__(
        self,
        hidden_channels: int = 64,
        num_layers: int = 4,
        layer: Union[LayerSpec, Sequence[LayerSpec]] = 'exchangeable',
    ):
        super().__init__()
        if isinstance(layer, (list, tuple)):
            specs = list(layer)
        else:
            if num_layers < 0:
                raise ValueError(f"'num_layers' must be >= 0, got "
                                 f"{num_layers}")
            specs = [layer] * num_layers
        self.hidden_channels = hidden_channels
        self.embed = Linear(1, hidden_channels)
        self.layers = ModuleList(
            make_layer(spec, hidden_channels) for spec in specs)
        for lay in self.layers:
            if lay.channels != hidden_channels:
                raise ValueError(f'layer {lay!r} has {lay.channels} '
                                 f'channels, expected {hidden_channels}')

    @property
    def node_channels(self) -> int:
        return 2 * self.hidden_channels + 1

    @property
    def graph_channels(self) -> int:
        return self.hidden_channels + 2

    def reset_parameters(self):
        self.embed.reset_parameters()
        for lay in self.layers:
            lay.reset_parameters()

    def forward(self, z: Tensor,
                ops: BipartiteOps) -> tuple[Tensor, Tensor, Tensor]:
        x_row = z.new_zeros(ops.num_rows, self.hidden_channels)
        x_col = z.new_zeros(ops.num_cols, self.hidden_channels)
        # Without autograd the entry states are the encoder's own, and
        # layers that can may overwrite them: no new (E, C) tensor a layer.
        owned = not torch.is_grad_enabled()
        layers = list(self.layers)
        first = layers[0] if layers else None
        if owned and not ops.reference and \
                type(first).forward is ExchangeableLayer.forward:
            # Fast path: embedding and first layer in one pass.
            x_edge = first.forward_embedded(z, self.embed, ops)  # (E, C)
            layers = layers[1:]
        else:
            x_edge = self.embed(z.unsqueeze(-1))  # (E, C)
        for lay in layers:
            if owned and lay.supports_inplace:
                x_row, x_col, x_edge = lay(x_row, x_col, x_edge, ops,
                                           inplace=True)
            else:
                x_row, x_col, x_edge = lay(x_row, x_col, x_edge, ops)

        row_mean, col_mean, graph_mean = ops.pool(x_edge)
        h_row = torch.cat([
            x_row, row_mean,
            torch.log1p(ops.row_degree).unsqueeze(-1).to(x_edge.dtype),
        ], dim=-1)  # (N, 2C + 1)
        h_col = torch.cat([
            x_col, col_mean,
            torch.log1p(ops.col_degree).unsqueeze(-1).to(x_edge.dtype),
        ], dim=-1)  # (M, 2C + 1)
        entries = ops.graph_entries
        density = torch.stack([
            torch.log1p(entries / ops.rows_per_graph.clamp(min=1)),
            torch.log1p(entries / ops.cols_per_graph.clamp(min=1)),
        ], dim=-1).to(x_edge.dtype)  # (B, 2)
        h_graph = torch.cat([graph_mean, density], dim=-1)
        return h_row, h_col, h_graph

    def __repr__(self) -> str:
        names = ', '.join(repr(lay) for lay in self.layers)
        return f'{self.__class__.__name__}([{names}])'
