"""Accuracy and calibration of imputations.

All errors are in each matrix's original scale. Calibration compares the
predicted standard deviation of every imputed entry with its actual error:
under a well-calibrated Gaussian, 50% of entries fall inside the central 50%
interval (:math:`|e| \\le 0.674\\,\\sigma`) and 90% inside the 90% interval
(:math:`|e| \\le 1.645\\,\\sigma`).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor
from torch_geometric.data import Batch

from .data import MatrixGraph

__all__ = ['imputation_metrics', 'evaluate_tasks', 'evaluate_split']

_Z50, _Z90 = 0.6744897501960817, 1.6448536269514722


def imputation_metrics(mean: Tensor, target: Tensor,
                       std: Optional[Tensor] = None) -> dict[str, float]:
    r"""RMSE and MAE of ``mean`` against ``target`` (each ``(Q,)``); with
    ``std``, also the Gaussian negative log-likelihood per entry (``nll``)
    and the shares of entries inside the 50% and 90% intervals
    (``cover50``, ``cover90``)."""
    if mean.shape != target.shape:
        raise ValueError(f'predictions and targets differ in shape: '
                         f'{tuple(mean.shape)} and {tuple(target.shape)}')
    err = (mean - target).double()
    out = {'num_entries': int(err.numel())}
    if err.numel() == 0:
        return {**out, 'rmse': math.nan, 'mae': math.nan}
    out['rmse'] = float(err.pow(2).mean().sqrt())
    out['mae'] = float(err.abs().mean())
    if std is not None:
        std = std.double()
        ratio = err.abs() / std
        out['nll'] = float((0.5 * torch.log(2 * math.pi * std ** 2) +
                            0.5 * ratio ** 2).mean())
        out['cover50'] = float((ratio <= _Z50).double().mean())
        out['cover90'] = float((ratio <= _Z90).double().mean())
    return out


@torch.no_grad()
def evaluate_tasks(model, tasks: Sequence[MatrixGraph],
                   batch_size: int = 64,
                   num_steps: Optional[int] = None) -> dict[str, float]:
    r"""Metrics of ``model`` (anything with ``impute(graph, index)``) over
    the query entries of ``tasks``, pooled over all entries, plus the mean
    and standard deviation of the per-task RMSE (``task_rmse_mean``,
    ``task_rmse_std``) and the number of tasks."""
    means, stds, targets, task_rmse = [], [], [], []
    for start in range(0, len(tasks), batch_size):
        batch = Batch.from_data_list(list(tasks[start:start + batch_size]))
        if num_steps is None:
            mean, std = model.impute(batch, batch.edge_label_index)
        else:
            mean, std = model.impute(batch, batch.edge_label_index,
                                     num_steps=num_steps)
        target = batch.edge_label.to(mean.dtype)
        task = batch.row_batch[batch.edge_label_index[0]]  # (Q,)
        sq = torch.zeros(batch.num_matrices, dtype=torch.float64)
        sq.index_add_(0, task, (mean - target).double() ** 2)
        count = torch.bincount(task, minlength=batch.num_matrices)
        task_rmse.append((sq / count.clamp(min=1)).sqrt()[count > 0])
        means.append(mean)
        stds.append(std)
        targets.append(target)
    out = imputation_metrics(torch.cat(means), torch.cat(targets),
                             torch.cat(stds))
    per_task = torch.cat(task_rmse)
    out['num_tasks'] = len(tasks)
    out['task_rmse_mean'] = float(per_task.mean())
    out['task_rmse_std'] = float(per_task.std()) if per_task.numel() > 1 \
        else 0.0
    return out


@torch.no_grad()
def evaluate_split(model, graph: MatrixGraph,
                   num_steps: Optional[int] = None) -> dict[str, float]:
    r"""Metrics of imputing ``graph.edge_label_index`` from all of
    ``graph``'s observed entries: a dataset's standard train/test split
    used as support/query, e.g. MovieLens 100K ``u1`` or Douban."""
    if graph.get('edge_label') is None:
        raise ValueError("the graph has no test entries ('edge_label'); "
                         "load a dataset with a split that has them")
    kwargs = {} if num_steps is None else {'num_steps': num_steps}
    mean, std = model.impute(graph, graph.edge_label_index, **kwargs)
    return imputation_metrics(mean, graph.edge_label.to(mean.dtype), std)
