"""Per-matrix normalisation of observed values.

One model serves matrices on different rating scales (1-5, 0.5-5, 1-100) if
it only ever sees scale-free values: each matrix's observed values are
standardised by their own mean and spread, and predictions are mapped back.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .ops import BipartiteOps

__all__ = ['MatrixScale']


@dataclass
class MatrixScale:
    r"""Location, spread and range of each matrix's observed values.

    .. math::
        z_{ij} = (r_{ij} - m_b) / s_b, \qquad
        m_b = \operatorname{mean}_{(i,j) \in \mathcal{S}_b} r_{ij}, \qquad
        s_b = \operatorname{std}_{(i,j) \in \mathcal{S}_b} r_{ij}

    A matrix with no spread (one entry, or all values equal) gets
    :math:`s_b = 1`, an empty one :math:`m_b = 0`.

    Shapes: every field :math:`(B,)`.
    """
    mean: Tensor
    scale: Tensor
    low: Tensor
    high: Tensor

    @classmethod
    def fit(cls, value: Tensor, ops: BipartiteOps) -> MatrixScale:
        v = value.unsqueeze(-1)  # (E, 1)
        mean = ops.graph_mean(v).squeeze(-1)  # (B,)
        centred = value - mean.index_select(0, ops.edge_batch)
        var = ops.graph_mean(centred.unsqueeze(-1) ** 2).squeeze(-1)
        scale = var.sqrt()
        flat = scale <= 1e-6 * (1 + mean.abs())
        scale = torch.where(flat, torch.ones_like(scale), scale)
        low = value.new_full((ops.num_graphs,), float('inf'))
        high = value.new_full((ops.num_graphs,), float('-inf'))
        low = low.scatter_reduce(0, ops.edge_batch, value, 'amin')
        high = high.scatter_reduce(0, ops.edge_batch, value, 'amax')
        return cls(mean, scale, low, high)

    def normalize(self, value: Tensor, batch: Tensor) -> Tensor:
        r"""Raw values of entries in matrices ``batch`` to scale-free ones."""
        return ((value - self.mean.index_select(0, batch)) /
                self.scale.index_select(0, batch))

    def denormalize(self, z: Tensor, batch: Tensor,
                    clip: bool = False) -> Tensor:
        r"""Scale-free values back to the matrices' scales, optionally
        clipped to the range of each matrix's observed values."""
        out = (z * self.scale.index_select(0, batch) +
               self.mean.index_select(0, batch))
        if clip:
            low = self.low.index_select(0, batch)
            high = self.high.index_select(0, batch)
            finite = torch.isfinite(low)  # An empty matrix has no range.
            out = torch.where(finite, torch.minimum(torch.maximum(
                out, low), high), out)
        return out
