r"""Protocol A tasks and their scores: the fixed few-shot test tasks, their
fingerprints and sizes, per-task scoring of a method, and the paired
per-task differences between methods."""
from __future__ import annotations

import hashlib
import math
from dataclasses import replace
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch_geometric.data import Batch

from ..config import TrainConfig
from ..data import MatrixGraph, TaskSampler
from ..evaluate import imputation_metrics
from ..train import TEST_SEED, load_parts
from .plan import SUPPORTS


def few_shot_tasks(config: TrainConfig, dataset: str, setting: str,
                   num_tasks: int, parts=None) -> list[MatrixGraph]:
    r"""The fixed protocol A tasks of one dataset and support setting.

    Tasks are drawn from the meta-test part of ``dataset`` (split as in
    meta-training, :func:`~gnn_metamf.train.load_parts`), with the task
    sizes and column sampling of ``config.tasks``, the support of
    ``SUPPORTS[setting]`` and the seed ``TEST_SEED + config.seed``. The
    same arguments always give the same tasks.
    """
    if setting not in SUPPORTS:
        raise ValueError(f'unknown support setting {setting!r}, expected '
                         f'one of {list(SUPPORTS)}')
    if parts is None:
        parts = load_parts(replace(config, datasets=(dataset,)))
    tasks = config.tasks
    sampler = TaskSampler(parts[dataset]['test'],
                          num_rows=tuple(tasks.num_rows),
                          num_cols=tuple(tasks.num_cols),
                          col_sampling=tasks.col_sampling,
                          seed=TEST_SEED + config.seed, **SUPPORTS[setting])
    return sampler.fixed_tasks(num_tasks)


def tasks_fingerprint(tasks: Sequence[MatrixGraph]) -> str:
    r"""A short hash of the tasks' entries and ids: equal fingerprints mean
    every method saw the same tasks."""
    digest = hashlib.sha256()
    for task in tasks:
        for key in ('edge_index', 'edge_value', 'edge_label_index',
                    'edge_label', 'row_id', 'col_id'):
            value = task.get(key)
            if value is not None:
                digest.update(value.detach().cpu().contiguous().numpy()
                              .tobytes())
        digest.update(f'{task.num_rows}x{task.num_cols};'.encode())
    return digest.hexdigest()[:16]


def task_statistics(tasks: Sequence[MatrixGraph],
                    part: Optional[MatrixGraph] = None) -> dict[str, Any]:
    r"""Sizes of a task set: the medians and minima of the task sizes and
    of their support and query entries, the total and distinct query
    entries (tasks drawn from one part overlap), and the size of the part
    they were drawn from."""
    support = np.array([t.num_entries for t in tasks])
    query = np.array([t.edge_label.numel() for t in tasks])
    rows = np.array([t.num_rows for t in tasks])
    cols = np.array([t.num_cols for t in tasks])
    pairs = set()
    for t in tasks:
        r = t.row_id[t.edge_label_index[0]].tolist()
        c = t.col_id[t.edge_label_index[1]].tolist()
        pairs.update(zip(r, c))
    out = {
        'num_tasks': len(tasks),
        'rows_median': float(np.median(rows)),
        'cols_median': float(np.median(cols)),
        'support_median': float(np.median(support)),
        'support_min': int(support.min()),
        'query_median': float(np.median(query)),
        'query_min': int(query.min()),
        'query_total': int(query.sum()),
        'query_distinct': len(pairs),
        'tasks_per_query_entry': round(float(query.sum()) /
                                       max(len(pairs), 1), 2),
        'tasks_sha': tasks_fingerprint(tasks),
    }
    if part is not None:
        out.update(part_rows=part.num_rows, part_cols=part.num_cols,
                   part_entries=part.num_entries)
    return out


@torch.no_grad()
def score_tasks(method, tasks: Sequence[MatrixGraph],
                num_steps: Optional[int] = None,
                batch_size: int = 64) -> dict[str, Any]:
    r"""Scores ``method`` (anything with ``impute(graph, index)``) on the
    query entries of ``tasks``: the pooled metrics of
    :func:`~gnn_metamf.evaluate.imputation_metrics`, and the per-task RMSE
    (``task_rmse``, a list aligned with ``tasks``, NaN for a task without
    query) with its mean, standard deviation and standard error
    (``task_rmse_se`` = std / sqrt(tasks)). Agrees with
    :func:`~gnn_metamf.evaluate.evaluate_tasks`."""
    kwargs = {} if num_steps is None else {'num_steps': num_steps}
    means, stds, targets, per_task = [], [], [], []
    for start in range(0, len(tasks), batch_size):
        batch = Batch.from_data_list(list(tasks[start:start + batch_size]))
        mean, std = method.impute(batch, batch.edge_label_index, **kwargs)
        target = batch.edge_label.to(mean.dtype)
        task = batch.row_batch[batch.edge_label_index[0]]  # (Q,)
        sq = torch.zeros(batch.num_matrices, dtype=torch.float64)
        sq.index_add_(0, task, (mean - target).double() ** 2)
        count = torch.bincount(task, minlength=batch.num_matrices)
        rmse = (sq / count.clamp(min=1)).sqrt()
        rmse[count == 0] = math.nan
        per_task.append(rmse)
        means.append(mean)
        stds.append(std)
        targets.append(target)
    out: dict[str, Any] = imputation_metrics(
        torch.cat(means), torch.cat(targets), torch.cat(stds))
    per_task = torch.cat(per_task).numpy()
    out.update(_spread(per_task, 'task_rmse'))
    out['num_tasks'] = len(tasks)
    out['task_rmse'] = per_task.tolist()
    return out


def _spread(values: np.ndarray, prefix: str) -> dict[str, float]:
    values = values[~np.isnan(values)]
    n = values.size
    std = float(values.std(ddof=1)) if n > 1 else 0.0
    return {f'{prefix}_mean': float(values.mean()) if n else math.nan,
            f'{prefix}_std': std,
            f'{prefix}_se': std / math.sqrt(n) if n else math.nan}


def paired_differences(per_task: dict[str, Sequence[float]],
                       reference: str = 'full') -> dict[str, dict]:
    r"""Per-task RMSE of each method minus that of ``reference`` on the
    same tasks: ``{method: {'diff_mean', 'diff_std', 'diff_se',
    'share_worse'}}``. A positive difference means ``reference`` was
    better; ``share_worse`` is the share of tasks where the method's RMSE
    is above the reference's. Paired differences cancel the spread of task
    difficulty, which dominates the unpaired error bars."""
    if reference not in per_task:
        return {}
    ref = np.asarray(per_task[reference], dtype=float)
    out = {}
    for method, values in per_task.items():
        values = np.asarray(values, dtype=float)
        if values.shape != ref.shape:
            raise ValueError(f'{method} was scored on {values.size} tasks, '
                             f'{reference} on {ref.size}')
        diff = values - ref
        spread = _spread(diff, 'diff')
        valid = ~np.isnan(diff)
        spread['share_worse'] = float((diff[valid] > 0).mean()) \
            if valid.any() else math.nan
        out[method] = spread
    return out
