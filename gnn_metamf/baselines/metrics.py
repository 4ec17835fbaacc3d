r"""Error metrics of predicted entries."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ['evaluate_predictions']


def evaluate_predictions(pred: Any, target: Any) -> dict[str, float]:
    r"""The root mean squared error and the mean absolute error,

    .. math::
        \mathrm{RMSE} = \sqrt{\frac{1}{Q} \sum_{q=1}^{Q}
        (\hat{r}_q - r_q)^2}, \qquad
        \mathrm{MAE} = \frac{1}{Q} \sum_{q=1}^{Q} |\hat{r}_q - r_q|,

    computed in ``float64``.

    Args:
        pred (torch.Tensor): Predictions, shape ``(Q,)``.
        target (torch.Tensor): True values, shape ``(Q,)``.

    Returns:
        dict: ``{'rmse': float, 'mae': float}``.
    """
    pred = _as_values(pred, 'pred')
    target = _as_values(target, 'target')
    if pred.shape != target.shape:
        raise ValueError(f"'pred' and 'target' must have the same shape, got "
                         f"{tuple(pred.shape)} and {tuple(target.shape)}")
    if pred.numel() == 0:
        raise ValueError("'pred' and 'target' are empty; expected at least "
                         "one entry")
    error = pred - target.to(pred.device)
    return {'rmse': float(error.square().mean().sqrt()),
            'mae': float(error.abs().mean())}


def _as_values(value: Any, name: str) -> Tensor:
    value = torch.as_tensor(value)
    if value.dim() != 1:
        raise ValueError(f"'{name}' must have shape (Q,), got "
                         f"{tuple(value.shape)}")
    if value.dtype == torch.bool or value.is_complex():
        raise ValueError(f"'{name}' must hold real numbers, got dtype "
                         f"{value.dtype}")
    return value.to(torch.float64)
