r"""Running a benchmark: the units of work (each scores some methods in one
process and returns plain rows), :func:`run_benchmark`, which trains the
runs and spreads the units over a process pool, and the merging, saving
and logging of their results."""
from __future__ import annotations

import logging
import multiprocessing
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from ..baselines import BaselineImputer
from ..checkpoint import load_checkpoint
from ..config import TrainConfig
from ..datasets import load_dataset
from ..evaluate import evaluate_split
from ..nn import MetaMF
from ..train import TEST_SEED, VAL_SEED, load_parts
from .io import (
    _append_environment,
    _now,
    _write_csv,
    _write_json,
    environment,
)
from .plan import VARIANTS, BenchmarkPlan, RunSpec, _name_split
from .report import write_reports
from .runs import _check_same_config, train_run
from .tasks import (
    few_shot_tasks,
    paired_differences,
    score_tasks,
    task_statistics,
    tasks_fingerprint,
)

log = logging.getLogger(__name__)
# The package's logger: the loggers of its modules propagate to it, and
# worker processes print through it (_init_worker).
_package_log = logging.getLogger(__package__)


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
                               initargs=(_package_log.getEffectiveLevel(),))


def _init_worker(level: int) -> None:
    # Workers print their training lines as the parent process would.
    torch.set_num_threads(1)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter('%(message)s'))
    _package_log.addHandler(handler)
    _package_log.propagate = False
    _package_log.setLevel(level)


def _progress(enabled: bool, total: int):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, unit='unit', leave=False)


def _tick(bar) -> None:
    if bar is not None:
        bar.update(1)

