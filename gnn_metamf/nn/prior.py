"""Gaussian prior heads: from representations to a prior per node."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Linear, Sequential

__all__ = ['GaussianPriorHead']


class GaussianPriorHead(torch.nn.Module):
    r"""A diagonal Gaussian prior over each node's augmented factor
    :math:`\tilde{\mathbf{u}}_i = [\mathbf{u}_i; b_i] \in \mathbb{R}^{K+1}`
    (latent factor and bias):

    .. math::
        p(\tilde{\mathbf{u}}_i) = \mathcal{N}\big(\boldsymbol{\mu}_i,
        \operatorname{diag}(\boldsymbol{\lambda}_i)^{-1}\big),
        \qquad [\boldsymbol{\mu}_i, \boldsymbol{\rho}_i] =
        \mathrm{MLP}([\mathbf{h}_i; \mathbf{g}_{b(i)}]),
        \qquad \boldsymbol{\lambda}_i = \mathrm{softplus}(\boldsymbol{\rho}_i)
        + \lambda_{\min}

    from the node's representation :math:`\mathbf{h}_i` and its matrix's
    context :math:`\mathbf{g}_{b(i)}`.

    Args:
        node_channels (int): Width of :math:`\mathbf{h}_i`.
        graph_channels (int): Width of :math:`\mathbf{g}`.
        rank (int): Latent dimension ``K``.
        hidden_channels (int): Width of the MLP. (default: :obj:`64`)
        init_precision (float): Precision at initialisation, before
            training. (default: :obj:`1.0`)
        min_precision (float): :math:`\lambda_{\min}`, keeps every solve
            well conditioned. (default: :obj:`1e-3`)

    Shapes:
        - **input:** node representations :math:`(N, D_h)`, matrix context
          :math:`(B, D_g)`, matrix id of each node :math:`(N,)`
        - **output:** mean :math:`(N, K + 1)`, precision :math:`(N, K + 1)`
    """
    def __init__(self, node_channels: int, graph_channels: int, rank: int,
                 hidden_channels: int = 64, init_precision: float = 1.0,
                 min_precision: float = 1e-3):
        super().__init__()
        self.rank = rank
        self.min_precision = min_precision
        # softplus(offset) = init_precision - min_precision at zero input.
        target = max(init_precision - min_precision, 1e-6)
        self.precision_offset = math.log(math.expm1(target))
        self.mlp = Sequential(
            Linear(node_channels + graph_channels, hidden_channels),
            torch.nn.ReLU(),
            Linear(hidden_channels, 2 * (rank + 1)),
        )
        self.reset_parameters()

    def reset_parameters(self):
        for module in self.mlp:
            if hasattr(module, 'reset_parameters'):
                module.reset_parameters()

    def forward(self, h_node: Tensor, h_graph: Tensor,
                batch: Tensor) -> tuple[Tensor, Tensor]:
        x = torch.cat([h_node, h_graph.index_select(0, batch)], dim=-1)
        out = self.mlp(x)  # (N, 2(K + 1))
        mean, raw = out.chunk(2, dim=-1)  # (N, K + 1) each
        precision = F.softplus(raw + self.precision_offset)
        return mean, precision + self.min_precision

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(rank={self.rank})'
