r"""Benchmark protocols: the meta-learned model, its two ablations and the
per-matrix baselines, scored on exactly the same matrices and entries.

Three model variants are meta-trained with
:class:`~gnn_metamf.train.Trainer` (see :data:`VARIANTS`): ``'full'`` (the
default :class:`~gnn_metamf.config.ModelConfig`), ``'prior_only'`` (no
refinement step: the encoder's prior means are the factors) and
``'no_encoder'`` (a fixed, meta-learned prior refined by the MAP steps).

* **Protocol A, few-shot imputation of unseen matrices.** Test tasks are
  sub-matrices of a dataset's meta-test part (rows *and* columns that
  meta-training never saw), drawn with the task sizes of the training
  configuration and the seed ``TEST_SEED + seed``, at several support
  settings (:data:`SUPPORTS`). Each method imputes the query entries of
  every task from its support entries only.
* **Protocol B, transfer.** A model meta-trained on one dataset imputes the
  standard test entries of another from that dataset's standard training
  entries (:func:`~gnn_metamf.evaluate.evaluate_split`), in its original
  scale; baselines are fitted on the same training entries.
* **Protocol C, one large matrix.** Models meta-trained on MovieLens 100K
  ``u1.base`` (which never contains a ``u1.test`` entry) impute
  ``u1.test`` from all of ``u1.base``.

Every function is silent and returns rows of plain dictionaries; progress
goes to the ``logging`` logger of this module. :func:`run_benchmark` runs a
:class:`BenchmarkPlan` end to end, trains or reuses the runs under
``<out>/runs/<name>/``, writes tables, CSV and JSON files and plots into
``<out>/``, and checks the targets (:func:`check_targets`).

Example:

.. code-block:: python

    plan = BenchmarkPlan(protocols=('A',), steps=1200, num_tasks=200)
    summary = run_benchmark(plan, 'results', jobs=2)
    summary['targets']  # [{'target': ..., 'status': 'met', ...}, ...]
"""
from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import logging
import math
import multiprocessing
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np
import torch
from torch_geometric.data import Batch

from .baselines import BASELINES, BaselineImputer
from .checkpoint import load_checkpoint
from .config import ModelConfig, TaskConfig, TrainConfig
from .data import MatrixGraph, TaskSampler
from .datasets import load_dataset
from .evaluate import evaluate_split, imputation_metrics
from .nn import MetaMF
from .train import TEST_SEED, VAL_SEED, Trainer, load_parts

__all__ = [
    'VARIANTS', 'SUPPORTS', 'PUBLISHED', 'PROTOCOLS', 'RunSpec',
    'BenchmarkPlan', 'available_baselines', 'train_run', 'few_shot_tasks',
    'task_statistics', 'tasks_fingerprint', 'score_tasks',
    'paired_differences', 'check_targets', 'markdown_table',
    'run_benchmark', 'write_reports', 'environment',
]

log = logging.getLogger(__name__)

PROTOCOLS = ('A', 'B', 'C')

#: ModelConfig fields that make each variant; the rest are the defaults.
VARIANTS: dict[str, dict[str, Any]] = {
    'full': {},
    'prior_only': {'num_steps': 0},
    'no_encoder': {'prior': 'fixed'},
}

#: TaskSampler arguments of each support setting of protocol A.
SUPPORTS: dict[str, dict[str, Any]] = {
    '10%': {'support_fraction': 0.1},
    '30%': {'support_fraction': 0.3},
    '50%': {'support_fraction': 0.5},
    '3/row': {'support_per_row': 3},
}

#: Published test RMSEs, printed beside ours: ``(protocol, target)`` to a
#: list of ``(method, rmse)``. IGMC: Zhang and Chen, ICLR 2020; GC-MC: van
#: den Berg et al. 2017; GLocal-K: Han et al., CIKM 2021.
PUBLISHED: dict[tuple[str, str], list[tuple[str, float]]] = {
    ('B', 'douban:standard'): [('IGMC, transferred from ML-100K', 0.759),
                               ('IGMC, in-domain', 0.721)],
    ('B', 'yahoo_music:standard'): [('IGMC, transferred from ML-100K', 20.1),
                                    ('IGMC, in-domain', 19.1)],
    ('B', 'ml-100k:u1'): [('IGMC, in-domain', 0.905),
                          ('GC-MC, in-domain', 0.910)],
    ('C', 'ml-100k:u1'): [('IGMC', 0.905), ('GC-MC', 0.910),
                          ('GLocal-K', 0.889)],
}

#: Protocol B by default: (training datasets, target, variants).
DEFAULT_TRANSFER: tuple[tuple[tuple[str, ...], str, tuple[str, ...]], ...] = (
    (('ml-100k:u1',), 'douban:standard', tuple(VARIANTS)),
    (('ml-100k:u1',), 'yahoo_music:standard', tuple(VARIANTS)),
    (('douban:standard', 'yahoo_music:standard'), 'ml-100k:u1', ('full',)),
)

# Absolute thresholds of the targets (RMSE, original scale).
_TARGETS_B = {'douban:standard': 0.721, 'yahoo_music:standard': 19.1}
_TARGET_C = 0.900
_TARGET_A_MARGIN = 0.03  # full at least 3% below the best baseline at 10%


def available_baselines() -> tuple[str, ...]:
    r"""The per-matrix baselines compared against: ``global_mean``,
    ``biases``, ``mf``, ``soft_impute``, and ``surprise_svd`` when
    scikit-surprise is installed."""
    names = ('global_mean', 'biases', 'mf', 'soft_impute')
    if importlib.util.find_spec('surprise') is not None:
        names += ('surprise_svd',)
    return names


# ----------------------------------------------------------------------
# Runs and the plan.

@dataclass(frozen=True)
class RunSpec:
    r"""One meta-training run: the datasets (``'name:split'``) and the
    variant (a key of :data:`VARIANTS`)."""
    datasets: tuple[str, ...]
    variant: str

    @property
    def name(self) -> str:
        r"""Folder name, e.g. ``'ml-100k-u1_full'``."""
        data = '+'.join(d.replace(':', '-') for d in self.datasets)
        return f'{data}_{self.variant}'


@dataclass
class BenchmarkPlan:
    r"""What :func:`run_benchmark` trains and scores.

    Args:
        protocols: Any of ``'A'``, ``'B'``, ``'C'``.
        steps: Meta-training steps of every run.
        seed: Seed of training and of the test tasks (``TEST_SEED + seed``).
        data_root: Data root, else ``$GNN_METAMF_DATA``, else ``datasets/``.
        few_shot: Protocol A datasets; each is scored with the variants
            meta-trained on it.
        transfer: Protocol B entries ``(training datasets, target,
            variants)``.
        large: Protocol C dataset: its variants impute its own test split.
        supports: Protocol A settings, keys of :data:`SUPPORTS`.
        num_tasks: Test tasks per dataset and setting.
        task_baselines: Baselines of protocol A.
        split_baselines: Baselines of protocols B and C.
        refinement_steps: Test-time refinement steps of the steps curves.
        steps_setting: Protocol A setting of the steps curve.
        train_options: Other :class:`TrainConfig` fields, e.g.
            ``val_every``.
        model_options: :class:`ModelConfig` fields shared by the variants.
        task_options: :class:`TaskConfig` fields.
    """
    protocols: tuple[str, ...] = PROTOCOLS
    steps: int = 1200
    seed: int = 0
    data_root: Optional[str] = None
    few_shot: tuple[str, ...] = ('ml-100k:u1', 'douban:standard')
    transfer: tuple = DEFAULT_TRANSFER
    large: str = 'ml-100k:u1'
    supports: tuple[str, ...] = tuple(SUPPORTS)
    num_tasks: int = 200
    task_baselines: tuple[str, ...] = field(
        default_factory=available_baselines)
    split_baselines: tuple[str, ...] = field(
        default_factory=available_baselines)
    refinement_steps: tuple[int, ...] = tuple(range(11))
    steps_setting: str = '30%'
    train_options: dict[str, Any] = field(default_factory=dict)
    model_options: dict[str, Any] = field(default_factory=dict)
    task_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.protocols = tuple(p.upper() for p in self.protocols)
        unknown = sorted(set(self.protocols) - set(PROTOCOLS))
        if unknown:
            raise ValueError(f'unknown protocol(s) {unknown}, expected any '
                             f'of {PROTOCOLS}')
        unknown = sorted(set(self.supports) - set(SUPPORTS))
        if unknown:
            raise ValueError(f'unknown support setting(s) {unknown}, '
                             f'expected any of {list(SUPPORTS)}')
        unknown = sorted(set(self.task_baselines + self.split_baselines)
                         - set(BASELINES))
        if unknown:
            raise ValueError(f'unknown baseline(s) {unknown}, expected any '
                             f'of {sorted(BASELINES)}')
        for _, _, variants in self.transfer:
            if set(variants) - set(VARIANTS):
                raise ValueError(f'unknown variant(s) in {variants}, '
                                 f'expected any of {list(VARIANTS)}')

    def runs(self) -> list[RunSpec]:
        r"""The runs the protocols need, each once, in training order."""
        specs = []
        if 'A' in self.protocols:
            specs += [RunSpec((d,), v) for d in self.few_shot
                      for v in VARIANTS]
        if 'B' in self.protocols:
            specs += [RunSpec(tuple(src), v)
                      for src, _, variants in self.transfer
                      for v in variants]
        if 'C' in self.protocols:
            specs += [RunSpec((self.large,), v) for v in VARIANTS]
        return list(dict.fromkeys(specs))

    def train_config(self, spec: RunSpec) -> TrainConfig:
        r"""The :class:`TrainConfig` of one run."""
        model = ModelConfig(**{**self.model_options,
                               **VARIANTS[spec.variant]})
        return TrainConfig(datasets=tuple(spec.datasets),
                           data_root=self.data_root, steps=self.steps,
                           seed=self.seed, threads=1, model=model,
                           tasks=TaskConfig(**self.task_options),
                           **self.train_options)

    def datasets(self) -> list[tuple[str, str]]:
        r"""Every ``(name, split)`` the plan reads."""
        specs = [d for s in self.runs() for d in s.datasets]
        if 'B' in self.protocols:
            specs += [target for _, target, _ in self.transfer]
        if 'C' in self.protocols:
            specs.append(self.large)
        return [_name_split(s) for s in dict.fromkeys(specs)]

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))


def _name_split(spec: str) -> tuple[str, str]:
    name, _, split = spec.partition(':')
    return name, split or 'all'


# ----------------------------------------------------------------------
# Training.

# Fields that may differ between a stored run and the requested one.
_REUSE_IGNORED = ('data_root', 'threads')


def train_run(config: TrainConfig, run_dir, parts=None,
              name: Optional[str] = None) -> dict[str, Any]:
    r"""Trains the run of ``config`` in ``run_dir``, or reuses it.

    A finished run (``checkpoint.pt`` at ``config.steps`` or stopped
    early) is reused; an interrupted one is resumed to ``config.steps``.
    Returns a row: ``run``, ``datasets``, ``status`` (``'trained'``,
    ``'resumed'`` or ``'reused'``), ``steps``, ``best_step``,
    ``best_val_rmse``, ``stopped_early``, ``seconds``.

    Raises:
        ValueError: If the stored run was trained with another
            configuration (other than ``data_root`` and ``threads``).
    """
    run_dir = Path(run_dir)
    name = name or run_dir.name
    path = run_dir / 'checkpoint.pt'
    start = time.perf_counter()
    status = 'trained'
    if path.is_file():
        payload = load_checkpoint(path)
        _check_same_config(payload.get('train_config', {}), config, path)
        state = payload.get('train_state', {})
        stopped = state.get('bad_validations', 0) >= config.patience
        if state.get('step', config.steps) >= config.steps or stopped:
            return _training_row(name, config, 'reused', state,
                                 time.perf_counter() - start)
        trainer = Trainer.resume(path, parts=parts)
        status = 'resumed'
    else:
        trainer = Trainer(config, run_dir, parts)

    def on_validation(record: dict) -> None:
        log.info('%-34s step %5d  train_rmse %.4f  val_rmse %.4f  '
                 'tasks/s %.1f', name, record['step'], record['train_rmse'],
                 record['val_rmse'], record['tasks_per_s'])

    trainer.fit(on_validation=on_validation)
    return _training_row(name, config, status, trainer.state_dict(),
                         time.perf_counter() - start)


def _check_same_config(stored: dict, config: TrainConfig, path) -> None:
    wanted = config.to_dict()
    keys = sorted(k for k in set(stored) | set(wanted)
                  if k not in _REUSE_IGNORED
                  and stored.get(k) != wanted.get(k))
    if keys:
        diff = ', '.join(f'{k}: stored {stored.get(k)!r}, wanted '
                         f'{wanted.get(k)!r}' for k in keys)
        raise ValueError(f'{path} was trained with another configuration '
                         f'({diff}); delete its folder or choose another '
                         f'output folder')


def _training_row(name: str, config: TrainConfig, status: str,
                  state: dict, seconds: float) -> dict[str, Any]:
    return {
        'run': name,
        'datasets': '+'.join(config.datasets),
        'status': status,
        'steps': int(state.get('step', 0)),
        'best_step': int(state.get('best_step', 0)),
        'best_val_rmse': float(state.get('best_val_rmse', math.nan)),
        'stopped_early': bool(state.get('bad_validations', 0)
                              >= config.patience),
        'seconds': round(seconds, 2),
    }


# ----------------------------------------------------------------------
# Tasks and scores.

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


# ----------------------------------------------------------------------
# Units of work: each runs in one process and returns plain rows.

@dataclass(frozen=True)
class _Unit:
    kind: str  # 'a_baselines', 'a_models', 'split_baselines', 'split_models'
    dataset: str  # protocol A dataset or protocol B/C target
    setting: Optional[str] = None  # protocol A setting ('a_baselines')
    models: tuple = ()  # ('B' or 'C', RunSpec) pairs ('split_models')

    @property
    def label(self) -> str:
        parts = [self.kind, self.dataset] + ([self.setting] if
                                             self.setting else [])
        return ' '.join(parts)


def _run_unit(plan: BenchmarkPlan, unit: _Unit, out: Path) -> dict:
    start = time.perf_counter()
    result = {'A': [], 'B': [], 'C': [], 'tasks': [], 'per_task': {},
              'steps': []}
    if unit.kind in ('a_baselines', 'a_models'):
        _few_shot_unit(plan, unit, out, result)
    else:
        _split_unit(plan, unit, out, result)
    result['seconds'] = round(time.perf_counter() - start, 2)
    result['label'] = unit.label
    return result


def _few_shot_unit(plan: BenchmarkPlan, unit: _Unit, out: Path,
                   result: dict) -> None:
    dataset = unit.dataset
    config = plan.train_config(RunSpec((dataset,), 'full'))
    parts = load_parts(replace(config, datasets=(dataset,)))
    if unit.kind == 'a_baselines':
        settings = [unit.setting]
        methods = [(n, BaselineImputer(n)) for n in plan.task_baselines]
    else:
        settings = list(plan.supports)
        methods = [(v, _load_model(out, RunSpec((dataset,), v)))
                   for v in VARIANTS]
    for setting in settings:
        tasks = few_shot_tasks(config, dataset, setting, plan.num_tasks,
                               parts)
        sha = tasks_fingerprint(tasks)
        if unit.kind == 'a_baselines':
            stats = task_statistics(tasks, parts[dataset]['test'])
            result['tasks'].append({'dataset': dataset, 'setting': setting,
                                    **stats})
        for method, imputer in methods:
            tic = time.perf_counter()
            scores = score_tasks(imputer, tasks)
            per_task = scores.pop('task_rmse')
            row = {'protocol': 'A', 'dataset': dataset, 'setting': setting,
                   'method': method, **_kind(method), **scores,
                   'tasks_sha': sha,
                   'seconds': round(time.perf_counter() - tic, 2)}
            result['A'].append(_drop_calibration(row))
            result['per_task'][(dataset, setting, method)] = per_task
        if unit.kind == 'a_models' and setting == plan.steps_setting:
            model = dict(methods)['full']
            for t in plan.refinement_steps:
                scores = score_tasks(model, tasks, num_steps=t)
                scores.pop('task_rmse')
                result['steps'].append({
                    'evaluation': f'A {dataset} {setting} tasks',
                    'run': RunSpec((dataset,), 'full').name,
                    'num_steps': t, 'trained_steps': config.model.num_steps,
                    **_pick(scores)})


def _split_unit(plan: BenchmarkPlan, unit: _Unit, out: Path,
                result: dict) -> None:
    name, split = _name_split(unit.dataset)
    graph = load_dataset(name, plan.data_root, split=split)
    if unit.kind == 'split_baselines':
        for method in plan.split_baselines:
            tic = time.perf_counter()
            scores = evaluate_split(BaselineImputer(method), graph)
            row = {'target': unit.dataset, 'trained_on': 'per-matrix',
                   'method': method, **_kind(method), **scores,
                   'seconds': round(time.perf_counter() - tic, 2)}
            for protocol in _split_protocols(plan, unit.dataset):
                result[protocol].append(_drop_calibration(
                    {'protocol': protocol, **row}))
        return
    for protocol, spec in unit.models:
        model = _load_model(out, spec)
        tic = time.perf_counter()
        scores = evaluate_split(model, graph)
        result[protocol].append({
            'protocol': protocol, 'target': unit.dataset,
            'trained_on': '+'.join(spec.datasets), 'method': spec.variant,
            **_kind(spec.variant), **scores,
            'seconds': round(time.perf_counter() - tic, 2)})
        if protocol == 'C' and spec.variant == 'full':
            config = plan.train_config(spec)
            for t in plan.refinement_steps:
                scores = evaluate_split(model, graph, num_steps=t)
                result['steps'].append({
                    'evaluation': f'C {unit.dataset} test split',
                    'run': spec.name, 'num_steps': t,
                    'trained_steps': config.model.num_steps,
                    **_pick(scores)})


def _split_protocols(plan: BenchmarkPlan, target: str) -> list[str]:
    out = []
    if 'B' in plan.protocols and any(t == target
                                     for _, t, _ in plan.transfer):
        out.append('B')
    if 'C' in plan.protocols and plan.large == target:
        out.append('C')
    return out


def _load_model(out: Path, spec: RunSpec) -> MetaMF:
    return MetaMF.load(out / 'runs' / spec.name / 'checkpoint.pt')


def _kind(method: str) -> dict[str, str]:
    return {'kind': 'model' if method in VARIANTS else 'baseline'}


def _drop_calibration(row: dict) -> dict:
    # A baseline's deviation is one plug-in number per matrix, not a
    # predictive distribution: its NLL and coverage would mislead.
    if row['kind'] == 'baseline':
        for key in ('nll', 'cover50', 'cover90'):
            row.pop(key, None)
    return row


def _pick(scores: dict) -> dict:
    keys = ('num_entries', 'rmse', 'mae', 'nll', 'cover50', 'cover90',
            'task_rmse_mean', 'task_rmse_se')
    return {k: scores[k] for k in keys if k in scores}


def _units(plan: BenchmarkPlan) -> tuple[list[_Unit], list[_Unit]]:
    r"""Units that need no model (baselines) and units that do."""
    free, needs = [], []
    targets = []
    if 'B' in plan.protocols:
        targets += [t for _, t, _ in plan.transfer]
    if 'C' in plan.protocols:
        targets.append(plan.large)
    targets = list(dict.fromkeys(targets))
    # Large matrices first: the longest units start earliest.
    free += [_Unit('split_baselines', t) for t in targets]
    if 'A' in plan.protocols:
        free += [_Unit('a_baselines', d, s) for d in plan.few_shot
                 for s in plan.supports]
        needs += [_Unit('a_models', d) for d in plan.few_shot]
    for target in targets:
        models = []
        if 'B' in plan.protocols:
            models += [('B', RunSpec(tuple(src), v))
                       for src, t, variants in plan.transfer if t == target
                       for v in variants]
        if 'C' in plan.protocols and plan.large == target:
            models += [('C', RunSpec((plan.large,), v)) for v in VARIANTS]
        needs.append(_Unit('split_models', target, models=tuple(models)))
    return free, needs


# ----------------------------------------------------------------------
# Running everything.

def run_benchmark(plan: BenchmarkPlan, out, jobs: int = 1,
                  command: Optional[str] = None,
                  progress: bool = False) -> dict[str, Any]:
    r"""Trains (or reuses) the runs of ``plan`` under ``<out>/runs/``,
    scores every protocol, and writes into ``out``: per protocol
    ``protocol_<x>.md``, ``.csv`` and ``.json`` (and for A the task sizes
    ``protocol_a_tasks.csv`` and every per-task RMSE
    ``protocol_a_per_task.csv``), ``refinement_steps.csv``,
    ``training.csv``, ``targets.md``/``.csv``, the combined
    ``results.md``, ``environment.json`` and the plots (see
    :func:`write_reports`).

    Args:
        plan (BenchmarkPlan): What to run.
        out (str or Path): Output folder.
        jobs (int): Processes working at once, each with one thread;
            trainings and evaluations are spread over them. With 1,
            everything runs in this process. (default: :obj:`1`)
        command (str, optional): The command line, for
            ``environment.json``.
        progress (bool): Show a progress bar over the units of work.

    Returns:
        dict: ``training``, ``A``, ``B``, ``C``, ``tasks``, ``steps`` and
        ``targets`` rows, and ``seconds``.
    """
    out = Path(out)
    (out / 'runs').mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    started_at = _now()
    # Fail early, before any work: missing data, or a stored run that was
    # trained with another configuration. Loading also fills the cache.
    for name, split in plan.datasets():
        load_dataset(name, plan.data_root, split=split)
    specs = plan.runs()
    for spec in specs:
        path = out / 'runs' / spec.name / 'checkpoint.pt'
        if path.is_file():
            _check_same_config(load_checkpoint(path).get('train_config', {}),
                               plan.train_config(spec), path)

    free, needs = _units(plan)
    bar = _progress(progress, len(specs) + len(free) + len(needs))
    results, training = [], []
    with _executor(jobs) as pool:
        trainings = [pool.submit(train_run, plan.train_config(s),
                                 out / 'runs' / s.name, None, s.name)
                     for s in specs]
        pending = [pool.submit(_run_unit, plan, u, out) for u in free]
        try:
            for future in as_completed(trainings):
                row = future.result()
                training.append(row)
                _tick(bar)
                log.info('train    %-34s %-8s steps %5d  best_step %5d  '
                         'best_val_rmse %.4f  %.0f s', row['run'],
                         row['status'], row['steps'], row['best_step'],
                         row['best_val_rmse'], row['seconds'])
            pending += [pool.submit(_run_unit, plan, u, out)
                        for u in needs]
            for future in as_completed(pending):
                result = future.result()
                results.append(result)
                _tick(bar)
                _log_unit(result)
        except BaseException:
            # Do not wait for queued work whose results will be dropped.
            for future in trainings + pending:
                future.cancel()
            raise
        finally:
            if bar is not None:
                bar.close()

    order = {s.name: i for i, s in enumerate(specs)}
    training.sort(key=lambda r: order[r['run']])
    merged = _merge(plan, results)
    merged['training'] = training
    merged['seconds'] = round(time.perf_counter() - start, 1)
    _save(plan, out, merged)
    env = environment()
    env['invocation'] = {
        'command': command, 'started': started_at, 'finished': _now(),
        'seconds': merged['seconds'], 'jobs': jobs,
        'protocols': list(plan.protocols), 'plan': plan.to_dict(),
        'seeds': {'train_seed': plan.seed, 'split_seed':
                  TrainConfig().split_seed, 'test_task_seed':
                  TEST_SEED + plan.seed, 'val_task_seed':
                  VAL_SEED + plan.seed, 'baseline_seed': 0},
        'training': training,
        'units': [{'unit': r['label'], 'seconds': r['seconds']}
                  for r in results],
    }
    _append_environment(out / 'environment.json', env)
    merged['targets'] = write_reports(out)
    return merged


def _merge(plan: BenchmarkPlan, results: list[dict]) -> dict[str, Any]:
    merged = {key: [r for res in results for r in res[key]]
              for key in ('A', 'B', 'C', 'tasks', 'steps')}
    per_task = {k: v for res in results for k, v in res['per_task'].items()}

    # The same tasks for every method, or the comparison means nothing.
    shas: dict[tuple, set] = {}
    for row in merged['A']:
        shas.setdefault((row['dataset'], row['setting']), set()).add(
            row['tasks_sha'])
    for key, found in shas.items():
        if len(found) != 1:
            raise RuntimeError(f'protocol A {key}: methods were scored on '
                               f'different tasks ({sorted(found)})')

    for row in merged['A']:
        group = {m: v for (d, s, m), v in per_task.items()
                 if (d, s) == (row['dataset'], row['setting'])}
        diff = paired_differences(group).get(row['method'], {})
        row.update({f'{k}_vs_full' if k == 'share_worse' else
                    k.replace('diff', 'diff_vs_full'): v
                    for k, v in diff.items()})
    methods = list(VARIANTS) + list(plan.task_baselines) + \
        list(plan.split_baselines)
    m_order = {m: i for i, m in enumerate(dict.fromkeys(methods))}
    d_order = {d: i for i, d in enumerate(plan.few_shot)}
    s_order = {s: i for i, s in enumerate(plan.supports)}
    merged['A'].sort(key=lambda r: (d_order[r['dataset']],
                                    s_order[r['setting']],
                                    m_order[r['method']]))
    merged['tasks'].sort(key=lambda r: (d_order[r['dataset']],
                                        s_order[r['setting']]))
    t_order = {t: i for i, t in enumerate(dict.fromkeys(
        [t for _, t, _ in plan.transfer] + [plan.large]))}
    for key in ('B', 'C'):
        merged[key].sort(key=lambda r: (t_order[r['target']],
                                        r['kind'] != 'model',
                                        r['trained_on'],
                                        m_order[r['method']]))
    merged['steps'].sort(key=lambda r: (r['evaluation'], r['num_steps']))
    merged['per_task'] = [
        {'dataset': d, 'setting': s, 'method': m, 'task': i, 'rmse': v}
        for (d, s, m), values in sorted(
            per_task.items(), key=lambda kv: (d_order[kv[0][0]],
                                              s_order[kv[0][1]],
                                              m_order[kv[0][2]]))
        for i, v in enumerate(values)]
    return merged


def _save(plan: BenchmarkPlan, out: Path, merged: dict) -> None:
    steps_a = [r for r in merged['steps'] if r['evaluation'][0] == 'A']
    steps_c = [r for r in merged['steps'] if r['evaluation'][0] == 'C']
    if 'A' in plan.protocols:
        _write_json(out / 'protocol_a.json', {
            'rows': merged['A'], 'tasks': merged['tasks'],
            'steps': steps_a})
        _write_csv(out / 'protocol_a.csv', merged['A'])
        _write_csv(out / 'protocol_a_tasks.csv', merged['tasks'])
        _write_csv(out / 'protocol_a_per_task.csv', merged['per_task'])
    if 'B' in plan.protocols:
        _write_json(out / 'protocol_b.json', {'rows': merged['B']})
        _write_csv(out / 'protocol_b.csv', merged['B'])
    if 'C' in plan.protocols:
        _write_json(out / 'protocol_c.json', {'rows': merged['C'],
                                              'steps': steps_c})
        _write_csv(out / 'protocol_c.csv', merged['C'])


def _log_unit(result: dict) -> None:
    for key in ('A', 'B', 'C'):
        for r in result[key]:
            where = (f"{r['dataset']} {r['setting']}" if key == 'A' else
                     f"{r['target']} <- {r['trained_on']}")
            extra = (f"  task_rmse {r['task_rmse_mean']:.4f} +- "
                     f"{r['task_rmse_se']:.4f}" if key == 'A' else '')
            log.info('%s        %-44s %-12s rmse %.4f  mae %.4f%s  %.1f s',
                     key, where, r['method'], r['rmse'], r['mae'], extra,
                     r['seconds'])
    log.info('done     %-44s %.0f s', result['label'], result['seconds'])


# ----------------------------------------------------------------------
# Processes.

class _InlineExecutor:
    # Runs each submitted call at once, in this process.
    def submit(self, fn: Callable, *args: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as error:  # Re-raised by future.result().
            future.set_exception(error)
        return future

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _executor(jobs: int):
    if jobs < 1:
        raise ValueError(f"'jobs' must be >= 1, got {jobs}")
    if jobs == 1:
        return _InlineExecutor()
    # Spawned workers: no forked copies of this process's torch threads.
    return ProcessPoolExecutor(jobs, multiprocessing.get_context('spawn'),
                               initializer=_init_worker,
                               initargs=(log.getEffectiveLevel(),))


def _init_worker(level: int) -> None:
    # Workers print their training lines as the parent process would.
    torch.set_num_threads(1)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter('%(message)s'))
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(level)


def _progress(enabled: bool, total: int):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, unit='unit', leave=False)


def _tick(bar) -> None:
    if bar is not None:
        bar.update(1)


# ----------------------------------------------------------------------
# Reports.

def check_targets(a_rows: Sequence[dict] = (), b_rows: Sequence[dict] = (),
                  c_rows: Sequence[dict] = ()) -> list[dict[str, str]]:
    r"""Checks the targets against measured rows. Returns rows with
    ``target``, ``status`` (``'met'``, ``'missed'`` or ``'not run'``) and
    ``measured`` (the numbers behind the verdict):

    1. In every protocol, ``full`` has a lower RMSE than every baseline and
       both ablations, in every comparison (each dataset and setting in A,
       each target in B and C).
    2. At 10% support in A, ``full``'s RMSE is at least 3% below the best
       per-matrix baseline's, on each dataset.
    3. B: ``full`` below 0.721 on Douban and below 19.1 on Yahoo Music.
    4. C: ``full`` below 0.900 on MovieLens 100K ``u1``.
    """
    out = []
    for protocol, rows, keys in (('A', a_rows, ('dataset', 'setting')),
                                 ('B', b_rows, ('target',)),
                                 ('C', c_rows, ('target',))):
        out.append(_beats_all(protocol, rows, keys))

    tenth = [r for r in a_rows if r['setting'] == '10%']
    datasets = list(dict.fromkeys(r['dataset'] for r in tenth))
    if not datasets:
        out.append(_target('A 10% support: full RMSE >= 3% below the best '
                           'per-matrix baseline', None, 'no protocol A '
                           'rows at 10% support'))
    for dataset in datasets:
        rows = [r for r in tenth if r['dataset'] == dataset]
        full = _find(rows, method='full')
        base = [r for r in rows if r['kind'] == 'baseline']
        text = f'A {dataset} 10% support: full RMSE >= 3% below the ' \
               f'best per-matrix baseline'
        if full is None or not base:
            out.append(_target(text, None, 'full or baselines missing'))
            continue
        best = min(base, key=lambda r: r['rmse'])
        gap = 1 - full['rmse'] / best['rmse']
        out.append(_target(
            text, gap >= _TARGET_A_MARGIN,
            f"full {full['rmse']:.4f}, best baseline {best['method']} "
            f"{best['rmse']:.4f}: {100 * gap:+.1f}% below"))

    for target, limit in _TARGETS_B.items():
        full = _find(b_rows, target=target, method='full',
                     trained_on='ml-100k:u1')
        text = f'B {target}: full (trained on ml-100k:u1) RMSE < {limit}'
        out.append(_target(text, None if full is None else
                           full['rmse'] < limit, 'not run' if full is None
                           else f"full {full['rmse']:.4f}"))
    full = _find(c_rows, method='full')
    text = f'C ml-100k:u1: full RMSE < {_TARGET_C}'
    out.append(_target(text, None if full is None else
                       full['rmse'] < _TARGET_C, 'not run' if full is None
                       else f"full {full['rmse']:.4f}"))
    return out


def _beats_all(protocol: str, rows: Sequence[dict],
               keys: tuple[str, ...]) -> dict[str, str]:
    text = f'{protocol}: full beats every baseline and both ablations'
    groups: dict[tuple, list] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    verdicts, missed = [], []
    for key, group in groups.items():
        full = [r for r in group if r['method'] == 'full']
        others = [r for r in group if r['method'] != 'full']
        if not full or not others:
            continue
        # In B, a target may have full models from several sources; the
        # comparison is between models of one source and the baselines.
        for f in full:
            rivals = [r for r in others if r['kind'] == 'baseline' or
                      r.get('trained_on') == f.get('trained_on')]
            best = min(rivals, key=lambda r: r['rmse'])
            ok = f['rmse'] < best['rmse']
            verdicts.append(ok)
            if not ok:
                src = f" <- {f['trained_on']}" if 'trained_on' in f else ''
                missed.append(f"{' '.join(key)}{src}: full "
                              f"{f['rmse']:.4f} vs {best['method']} "
                              f"{best['rmse']:.4f}")
    if not verdicts:
        return _target(text, None, 'not run')
    measured = f'{sum(verdicts)}/{len(verdicts)} comparisons won'
    if missed:
        measured += '; lost: ' + '; '.join(missed)
    return _target(text, all(verdicts), measured)


def _find(rows: Iterable[dict], **match) -> Optional[dict]:
    for r in rows:
        if all(r.get(k) == v for k, v in match.items()):
            return r
    return None


def _target(text: str, ok: Optional[bool], measured: str) -> dict:
    status = 'not run' if ok is None else ('met' if ok else 'missed')
    return {'target': text, 'status': status, 'measured': measured}


def markdown_table(rows: Sequence[dict], columns: Sequence[tuple]) -> str:
    r"""A markdown table of ``rows``; ``columns`` are ``(key, header)`` or
    ``(key, header, format)`` with a format such as ``'.4f'``. Missing or
    NaN values print as ``-``."""
    head = '| ' + ' | '.join(c[1] for c in columns) + ' |'
    rule = '|' + '|'.join('---' if len(c) < 3 else '---:'
                          for c in columns) + '|'
    lines = [head, rule]
    for r in rows:
        cells = []
        for c in columns:
            value = r.get(c[0])
            if value is None or (isinstance(value, float)
                                 and math.isnan(value)):
                cells.append('-')
            elif len(c) > 2:
                cells.append(format(value, c[2]))
            else:
                cells.append(str(value))
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


_A_COLUMNS = [('dataset', 'dataset'), ('setting', 'support'),
              ('method', 'method'), ('num_entries', 'query entries', 'd'),
              ('rmse', 'RMSE', '.4f'), ('mae', 'MAE', '.4f'),
              ('task_rmse_mean', 'task RMSE mean', '.4f'),
              ('task_rmse_std', 'std', '.4f'),
              ('task_rmse_se', 'SE', '.4f'),
              ('diff_vs_full_mean', 'minus full (paired)', '+.4f'),
              ('diff_vs_full_se', 'paired SE', '.4f'),
              ('nll', 'NLL', '.3f'), ('cover50', 'in 50%', '.3f'),
              ('cover90', 'in 90%', '.3f')]
_TASK_COLUMNS = [('dataset', 'dataset'), ('setting', 'support'),
                 ('num_tasks', 'tasks', 'd'),
                 ('part_entries', 'test-part entries', 'd'),
                 ('rows_median', 'rows (median)', '.0f'),
                 ('cols_median', 'cols (median)', '.0f'),
                 ('support_median', 'support (median)', '.0f'),
                 ('support_min', 'support (min)', 'd'),
                 ('query_median', 'query (median)', '.0f'),
                 ('query_min', 'query (min)', 'd'),
                 ('query_distinct', 'distinct query entries', 'd'),
                 ('tasks_per_query_entry', 'tasks per entry', '.1f')]
_SPLIT_COLUMNS = [('target', 'target'), ('trained_on', 'trained on'),
                  ('method', 'method'), ('num_entries', 'test entries', 'd'),
                  ('rmse', 'RMSE', '.4f'), ('mae', 'MAE', '.4f'),
                  ('nll', 'NLL', '.3f'), ('cover50', 'in 50%', '.3f'),
                  ('cover90', 'in 90%', '.3f')]
_STEPS_COLUMNS = [('evaluation', 'evaluation'), ('num_steps', 'steps', 'd'),
                  ('rmse', 'RMSE', '.4f'), ('mae', 'MAE', '.4f'),
                  ('task_rmse_mean', 'task RMSE mean', '.4f'),
                  ('task_rmse_se', 'SE', '.4f'), ('nll', 'NLL', '.3f')]


_TRAINING_COLUMNS = [('run', 'run'), ('status', 'status'),
                     ('steps', 'steps', 'd'), ('best_step', 'best step', 'd'),
                     ('best_val_rmse', 'best validation RMSE', '.4f'),
                     ('stopped_early', 'stopped early'),
                     ('seconds', 'seconds', '.0f')]


def _training_history(env: dict) -> list[dict]:
    # The latest row of each run, but the time of the invocation that
    # actually trained it rather than of one that reused it.
    rows: dict[str, dict] = {}
    for invocation in env.get('invocations', []):
        for row in invocation.get('training', []):
            old = rows.get(row['run'])
            if row['status'] == 'reused' and old is not None:
                continue
            rows[row['run']] = row
    return list(rows.values())


def _protocol_a_md(data: dict) -> str:
    lines = [
        '## Protocol A: few-shot imputation of unseen matrices', '',
        'Fixed test tasks from each dataset\'s meta-test part (rows and '
        'columns never seen in meta-training); every method imputes the '
        'same query entries of the same tasks from the same support. '
        'RMSE and MAE are pooled over all query entries; "task RMSE" is '
        'the mean of the per-task RMSEs with its standard deviation and '
        'standard error (std / sqrt(tasks)). "minus full" is the paired '
        'per-task difference to the full model (positive: full better). '
        'NLL and coverage of the 50% / 90% intervals are given for the '
        'models only.', '',
        markdown_table(data['rows'], _A_COLUMNS), '',
        '### Task sizes', '',
        'Tasks drawn from one meta-test part overlap: "tasks per entry" '
        'counts how many tasks query a distinct entry on average. The '
        'tasks are therefore not independent and the SE above understates '
        'the uncertainty of an unpaired comparison; the paired '
        'differences are the sounder one.', '',
        markdown_table(data['tasks'], _TASK_COLUMNS), '',
        *_task_notes(data['tasks'])]
    if data.get('steps'):
        lines += ['', '### Test-time refinement steps (full model)', '',
                  markdown_table(data['steps'], _STEPS_COLUMNS)]
    return '\n'.join(lines) + '\n'


def _task_notes(tasks: Sequence[dict]) -> list[str]:
    # What the task sizes mean for the precision of the numbers, in words.
    lines = []
    for dataset in dict.fromkeys(t['dataset'] for t in tasks):
        rows = [t for t in tasks if t['dataset'] == dataset]
        distinct = max(t['query_distinct'] for t in rows)
        sparsest = min(rows, key=lambda t: t['support_median'] /
                       max(t['rows_median'], 1))
        per_row = sparsest['support_median'] / max(sparsest['rows_median'],
                                                   1)
        lines.append(
            f"- {dataset}: the meta-test part has "
            f"{rows[0].get('part_entries', '?')} entries "
            f"({rows[0].get('part_rows', '?')} x "
            f"{rows[0].get('part_cols', '?')}); the tasks of one setting "
            f"query at most {distinct} distinct entries, so a pooled RMSE "
            f"is resolved to about +-{100 / math.sqrt(2 * distinct):.1f}% "
            f"of its value (RMSE / sqrt(2 x distinct entries)) however "
            f"many tasks are drawn. The sparsest setting, "
            f"{sparsest['setting']}, gives a median task "
            f"{sparsest['support_median']:.0f} support entries for "
            f"{sparsest['rows_median']:.0f} rows "
            f"({per_row:.2f} per row; fewest {sparsest['support_min']}), and "
            f"{sparsest['query_median']:.0f} query entries (fewest "
            f"{sparsest['query_min']}).")
    return lines


def _split_md(protocol: str, data: dict) -> str:
    title = {'B': 'Protocol B: transfer to other datasets',
             'C': 'Protocol C: one large matrix (MovieLens 100K u1)'}
    text = {'B': 'Models meta-trained on one dataset impute another '
                 'dataset\'s standard test entries from its standard '
                 'training entries, in its original scale. Baselines are '
                 'fitted on the same training entries.',
            'C': 'Models meta-trained on u1.base only (rows and columns '
                 'split 60/20/20; no u1.test entry) impute u1.test from '
                 'all of u1.base.'}
    rows = []
    for target in dict.fromkeys(r['target'] for r in data['rows']):
        rows += [r for r in data['rows'] if r['target'] == target]
        rows += [{'target': target, 'trained_on': 'published',
                  'method': m, 'rmse': v}
                 for m, v in PUBLISHED.get((protocol, target), [])]
    lines = [f'## {title[protocol]}', '', text[protocol], '',
             markdown_table(rows, _SPLIT_COLUMNS)]
    if data.get('steps'):
        lines += ['', '### Test-time refinement steps (full model)', '',
                  markdown_table(data['steps'], _STEPS_COLUMNS)]
    return '\n'.join(lines) + '\n'


def write_reports(out) -> list[dict[str, str]]:
    r"""(Re)writes the reports of ``out`` from every ``protocol_*.json``
    found there, so that protocols run separately end up in one report:
    ``protocol_<x>.md``, ``refinement_steps.csv``, ``targets.md`` and
    ``.csv``, ``results.md``, and the plots ``rmse_vs_support.png``,
    ``rmse_vs_steps.png`` and ``learning_curves.png``. Returns the targets
    (:func:`check_targets`)."""
    out = Path(out)
    data = {p: _read_json(out / f'protocol_{p.lower()}.json')
            for p in PROTOCOLS}
    sections = []
    if data['A']:
        text = _protocol_a_md(data['A'])
        (out / 'protocol_a.md').write_text(text)
        sections.append(text)
    for p in ('B', 'C'):
        if data[p]:
            text = _split_md(p, data[p])
            (out / f'protocol_{p.lower()}.md').write_text(text)
            sections.append(text)
    targets = check_targets(*(data[p]['rows'] if data[p] else []
                              for p in PROTOCOLS))
    _write_csv(out / 'targets.csv', targets)
    target_md = '## Targets\n\n' + markdown_table(
        targets, [('target', 'target'), ('status', 'status'),
                  ('measured', 'measured')]) + '\n'
    (out / 'targets.md').write_text(target_md)
    steps = [r for p in ('A', 'C') if data[p] for r in data[p]['steps']]
    _write_csv(out / 'refinement_steps.csv', steps)

    env = _read_json(out / 'environment.json') or {}
    training = _training_history(env)
    _write_csv(out / 'training.csv', training)
    sections.append('## Meta-training runs\n\n' + markdown_table(
        training, _TRAINING_COLUMNS) + '\n\nLearning curves: '
        '`learning_curves.png`; each run\'s `log.csv` is in '
        '`runs/<run>/`.\n')
    machine = env.get('machine', {})
    header = ['# Benchmark results', '',
              f"Machine: {machine.get('cpu_count')} cores, "
              f"{machine.get('platform')}; torch "
              f"{machine.get('torch')}, torch-geometric "
              f"{machine.get('torch_geometric')}. Seeds, plans and times: "
              f"`environment.json`; every number: the CSV files. "
              f"Commands:", '']
    header += [f"- `{inv.get('command')}` (protocols "
               f"{' '.join(inv.get('protocols', []))}, "
               f"{inv.get('seconds', 0) / 60:.1f} min, {inv.get('started')})"
               for inv in env.get('invocations', [])]
    header.append('')
    (out / 'results.md').write_text('\n'.join(header) + '\n' + target_md
                                    + '\n' + '\n'.join(sections))
    _plot_support(data['A']['rows'] if data['A'] else [],
                  out / 'rmse_vs_support.png')
    _plot_steps(steps, out / 'rmse_vs_steps.png')
    _plot_learning_curves(out / 'runs', out / 'learning_curves.png')
    return targets


# ----------------------------------------------------------------------
# Plots.

def _pyplot():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def _plot_support(rows: Sequence[dict], path: Path) -> None:
    datasets = list(dict.fromkeys(r['dataset'] for r in rows))
    if not datasets:
        return
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(datasets), squeeze=False,
                             figsize=(5.5 * len(datasets), 4))
    for ax, dataset in zip(axes[0], datasets):
        subset = [r for r in rows if r['dataset'] == dataset]
        settings = list(dict.fromkeys(r['setting'] for r in subset))
        methods = list(dict.fromkeys(r['method'] for r in subset))
        width = 0.6 / max(len(methods), 1)
        for k, method in enumerate(methods):
            pts = [(settings.index(r['setting']), r) for r in subset
                   if r['method'] == method]
            x = [i - 0.3 + (k + 0.5) * width for i, _ in pts]
            ax.errorbar(x, [r['task_rmse_mean'] for _, r in pts],
                        yerr=[r['task_rmse_se'] for _, r in pts],
                        marker='o' if method in VARIANTS else 's',
                        ls='-' if method in VARIANTS else ':',
                        capsize=3, label=method)
        ax.set_xticks(range(len(settings)), settings)
        ax.set_xlabel('support per task')
        ax.set_ylabel('per-task RMSE (mean +- SE)')
        ax.set_title(f'Protocol A: {dataset}')
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_steps(rows: Sequence[dict], path: Path) -> None:
    evaluations = list(dict.fromkeys(r['evaluation'] for r in rows))
    if not evaluations:
        return
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(evaluations), squeeze=False,
                             figsize=(4.5 * len(evaluations), 3.5))
    for ax, evaluation in zip(axes[0], evaluations):
        subset = [r for r in rows if r['evaluation'] == evaluation]
        ax.plot([r['num_steps'] for r in subset],
                [r['rmse'] for r in subset], marker='o')
        ax.axvline(subset[0]['trained_steps'], color='grey', ls=':',
                   label='trained steps')
        ax.set_xlabel('refinement steps at test time')
        ax.set_ylabel('RMSE (pooled)')
        ax.set_title(evaluation, fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_learning_curves(runs: Path, path: Path) -> None:
    logs = sorted(runs.glob('*/log.csv'))
    if not logs:
        return
    groups: dict[str, list[tuple[str, Path]]] = {}
    for p in logs:
        data, variant = _split_run_name(p.parent.name)
        groups.setdefault(data, []).append((variant, p))
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(groups), squeeze=False,
                             figsize=(5 * len(groups), 3.5))
    order = {v: i for i, v in enumerate(VARIANTS)}
    for ax, (group, paths) in zip(axes[0], groups.items()):
        paths.sort(key=lambda vp: order.get(vp[0], len(order)))
        for k, (variant, p) in enumerate(paths):
            with open(p, newline='') as handle:
                records = list(csv.DictReader(handle))
            steps = [int(r['step']) for r in records]
            color = f'C{k}'
            ax.plot(steps, [float(r['val_rmse']) for r in records],
                    color=color, label=f'{variant} validation')
            ax.plot(steps, [float(r['train_rmse']) for r in records],
                    color=color, ls='--', alpha=0.6,
                    label=f'{variant} train')
        ax.set_xlabel('step')
        ax.set_ylabel('RMSE (original scale)')
        ax.set_title(group, fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _split_run_name(name: str) -> tuple[str, str]:
    for variant in VARIANTS:
        if name.endswith('_' + variant):
            return name[:-len(variant) - 1], variant
    return name, name


# ----------------------------------------------------------------------
# Files and the environment.

def environment() -> dict[str, Any]:
    r"""The machine and software: cores, platform, Python, torch,
    torch-geometric and NumPy versions, threads, and the git commit of the
    code when it is a checkout."""
    import torch_geometric
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    return {'machine': {
        'cpu_count': os.cpu_count(),
        'cpus_usable': affinity,
        'platform': platform.platform(),
        'processor': platform.processor() or platform.machine(),
        'python': platform.python_version(),
        'torch': torch.__version__,
        'torch_geometric': torch_geometric.__version__,
        'numpy': np.__version__,
        'torch_threads': torch.get_num_threads(),
        'OMP_NUM_THREADS': os.environ.get('OMP_NUM_THREADS'),
        'surprise': importlib.util.find_spec('surprise') is not None,
        'git': _git(),
    }}


def _git() -> Optional[dict[str, Any]]:
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=root,
                                capture_output=True, text=True, check=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(['git', 'status', '--porcelain'], cwd=root,
                               capture_output=True, text=True, check=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {'commit': commit, 'uncommitted_changes': bool(dirty)}


def _append_environment(path: Path, env: dict) -> None:
    # Keep the invocations of earlier protocols run into the same folder.
    old = _read_json(path) or {}
    invocations = old.get('invocations', []) + [env.pop('invocation')]
    _write_json(path, {**env, 'date': _now(), 'invocations': invocations})


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec='seconds')


def _read_json(path: Path) -> Optional[dict]:
    return json.loads(path.read_text()) if path.is_file() else None


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, default=_json_default)
                    + '\n')


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    raise TypeError(f'cannot write {type(value).__name__} as JSON')


def _write_csv(path: Path, rows: Sequence[dict]) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, 'w', newline='') as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
