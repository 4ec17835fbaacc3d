"""Meta-training of :class:`~gnn_metamf.nn.MetaMF` over batches of tasks.

Each step draws ``batch_size`` tasks (sub-matrices with support and query
entries) from the meta-train parts of the datasets, runs the model on their
support as one disjoint batch and minimises the query error through the
unrolled refinement. Every ``val_every`` steps the model is scored on fixed
meta-validation tasks; the best one is kept, training stops after
``patience`` validations without improvement, and a checkpoint is written.

Under ``torch.distributed`` (e.g. ``torchrun --nproc-per-node 2``) each
process draws its own tasks and DistributedDataParallel averages the
gradients; only rank 0 writes files.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch_geometric.data import Batch

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import MatrixGraph, TaskSampler, split_rows_cols
from .datasets import load_dataset
from .evaluate import evaluate_tasks
from .nn import MetaMF

__all__ = ['Trainer', 'TrainResult', 'load_parts', 'task_sampler',
           'sampler_seed']

log = logging.getLogger(__name__)

# Seeds of the validation and test task samplers, apart from training's.
VAL_SEED, TEST_SEED = 1_000, 2_000


def load_parts(config: TrainConfig) -> dict[str, dict[str, MatrixGraph]]:
    r"""Loads each dataset of ``config.datasets`` (``'name'`` or
    ``'name:split'``; the observed entries of that split are used) and
    splits its rows and columns into meta-train, -validation and -test
    parts. Returns ``{dataset: {'train': graph, 'val': ..., 'test': ...}}``.
    """
    parts = {}
    for spec in config.datasets:
        name, _, split = spec.partition(':')
        graph = load_dataset(name, config.data_root,
                             split=split or 'all')
        meta = split_rows_cols(graph, config.split_fractions,
                               config.split_seed)
        parts[spec] = {p: meta.part(graph, p) for p in ('train', 'val',
                                                        'test')}
    return parts


def task_sampler(config: TrainConfig, graph: MatrixGraph,
                 seed: int) -> TaskSampler:
    r"""The task sampler of ``config.tasks`` on ``graph``."""
    tasks = config.tasks
    return TaskSampler(graph, num_rows=tuple(tasks.num_rows),
                       num_cols=tuple(tasks.num_cols),
                       support_fraction=tasks.support_fraction,
                       col_sampling=tasks.col_sampling, seed=seed)


def sampler_seed(seed: int, rank: int, dataset: int) -> int:
    r"""Seed of the training task sampler of one process and dataset:
    distinct for every pair, so processes never draw the same tasks."""
    return seed + 7919 * rank + 104_729 * dataset


@dataclass
class TrainResult:
    r"""What :meth:`Trainer.fit` returns: the best validation step, its
    pooled validation RMSE and its selection score (see
    :meth:`Trainer.validate`)."""
    best_step: int
    best_val_rmse: float
    steps: int
    stopped_early: bool
    history: list[dict[str, float]] = field(default_factory=list)
    best_val_score: float = math.nan


class _LossModule(torch.nn.Module):
    # DistributedDataParallel synchronises gradients of what its forward
    # computes, so the loss itself is the forward of the wrapped module.
    def __init__(self, model: MetaMF):
        super().__init__()
        self.model = model

    def forward(self, batch):
        return self.model.loss(batch)


class Trainer:
    r"""Meta-trains a :class:`MetaMF` from a :class:`TrainConfig`.

    Args:
        config (TrainConfig): The resolved configuration.
        out_dir (str or Path, optional): Run folder for ``checkpoint.pt``,
            ``config.json``, ``log.csv`` and ``curves.png``; nothing is
            written when omitted. (default: :obj:`None`)
        parts (dict, optional): Pre-loaded parts as returned by
            :func:`load_parts`, to skip loading. (default: :obj:`None`)
    """
    def __init__(self, config: TrainConfig, out_dir=None, parts=None):
        self.config = config
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.rank, self.world_size = _distributed()
        torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)

        self.parts = parts if parts is not None else load_parts(config)
        # Each process of a distributed run draws its own tasks.
        self.samplers = [
            task_sampler(config, p['train'], sampler_seed(config.seed,
                                                          self.rank, k))
            for k, p in enumerate(self.parts.values())]
        self.val_sets = {
            name: task_sampler(config, p['val'], VAL_SEED +
                               config.seed).fixed_tasks(config.val_tasks)
            for name, p in self.parts.items()}
        self.val_tasks = [task for tasks in self.val_sets.values()
                          for task in tasks]
        # The unit of each dataset's errors when several share a model
        # selection: the spread of its meta-train values.
        self.val_scales = {
            name: float(p['train'].edge_value.double().std())
            for name, p in self.parts.items()}

        self.model = MetaMF(**vars(config.model))
        self.optimizer = torch.optim.Adam(self.model.parameters(),
                                          lr=config.lr,
                                          weight_decay=config.weight_decay)
        self._loss = _LossModule(self.model)
        if self.world_size > 1:
            self._loss = DistributedDataParallel(
                self._loss, find_unused_parameters=config.model.num_steps
                == 0)
        self.step = 0
        self.best_val_score = math.inf
        self.best_val_rmse = math.inf
        self.best_step = 0
        self.best_state = _copy_state(self.model)
        self.bad_validations = 0
        self.history: list[dict[str, float]] = []

    # ------------------------------------------------------------------

    def next_batch(self) -> Batch:
        r"""The next training batch: tasks drawn in turn from each
        dataset's sampler."""
        tasks = [self.samplers[i % len(self.samplers)].__next__()
                 for i in range(self.config.batch_size)]
        return Batch.from_data_list(tasks)

    def train_step(self) -> dict[str, float]:
        r"""One optimisation step; returns the batch's loss statistics."""
        self.model.train()
        batch = self.next_batch()
        loss, stats = self._loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                           self.config.grad_clip)
        self.optimizer.step()
        self.step += 1
        return {'loss': loss.item(), **stats}

    def validate(self) -> dict[str, float]:
        r"""Metrics of the current model on the validation tasks: ``rmse``,
        ``mae`` and ``nll`` pooled over all their query entries, and
        ``score``, by which the best model is chosen. With one dataset the
        score is the RMSE. With several it is the mean over datasets of
        each one's RMSE divided by the standard deviation of its meta-train
        values (then also given as ``rmse:<dataset>``), so that a dataset
        rated 1-100 does not outweigh one rated 1-5 as it would in the
        pooled RMSE."""
        if len(self.val_sets) == 1:
            out = evaluate_tasks(self.model, self.val_tasks)
            return {**out, 'score': out['rmse']}
        per = {name: evaluate_tasks(self.model, tasks)
               for name, tasks in self.val_sets.items()}
        counts = {name: m['num_entries'] for name, m in per.items()}
        total = max(sum(counts.values()), 1)

        def pooled(key: str, power: int = 1) -> float:
            return sum(counts[name] * m[key] ** power
                       for name, m in per.items()) / total
        out = {'num_entries': sum(counts.values()),
               'rmse': math.sqrt(pooled('rmse', 2)),
               'mae': pooled('mae'), 'nll': pooled('nll'),
               'score': sum(m['rmse'] / self.val_scales[name]
                            for name, m in per.items()) / len(per)}
        out.update({f'rmse:{name}': m['rmse'] for name, m in per.items()})
        return out

    def fit(self, on_validation: Optional[Callable[[dict], None]] = None,
            progress: bool = False) -> TrainResult:
        r"""Trains until ``config.steps`` or early stopping.

        Args:
            on_validation (callable, optional): Called with each validation
                record (step, train loss, validation metrics, tasks/s).
            progress (bool): Show a progress bar (rank 0 only).
        """
        config = self.config
        if self.out_dir is not None and self.rank == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / 'config.json').write_text(
                json.dumps(config.to_dict(), indent=2) + '\n')
        bar = _progress(progress and self.rank == 0, self.step, config.steps)
        window, window_start = [], time.perf_counter()
        stopped = False
        while self.step < config.steps and not stopped:
            window.append(self.train_step())
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{window[-1]['loss']:.3f}")
            if self.step % config.val_every == 0 or self.step == config.steps:
                elapsed = time.perf_counter() - window_start
                record = self._record(window, elapsed)
                stopped = self.bad_validations >= config.patience
                self.save()
                if on_validation is not None and self.rank == 0:
                    on_validation(record)
                window, window_start = [], time.perf_counter()
        if bar is not None:
            bar.close()
        self.model.load_state_dict(self.best_state)
        if self.out_dir is not None and self.rank == 0:
            self._write_curves()
        return TrainResult(self.best_step, self.best_val_rmse, self.step,
                           stopped, list(self.history), self.best_val_score)

    def _record(self, window: list[dict], elapsed: float) -> dict:
        val = self.validate()
        tasks = len(window) * self.config.batch_size * self.world_size
        record = {
            'step': self.step,
            'train_loss': sum(w['loss'] for w in window) / len(window),
            'train_rmse': sum(w['rmse'] for w in window) / len(window),
            'val_rmse': val['rmse'],
            'val_mae': val['mae'],
            'val_nll': val['nll'],
            'val_score': val['score'],
            **{f'val_{key}': value for key, value in val.items()
               if key.startswith('rmse:')},
            'tasks_per_s': tasks / max(elapsed, 1e-9),
        }
        if val['score'] < self.best_val_score:
            self.best_val_score, self.best_step = val['score'], self.step
            self.best_val_rmse = val['rmse']
            self.best_state = _copy_state(self.model)
            self.bad_validations = 0
        else:
            self.bad_validations += 1
        record['best_val_rmse'] = self.best_val_rmse
        self.history.append(record)
        log.info('step %d: %s', self.step, record)
        return record

    # ------------------------------------------------------------------
    # Checkpoints.

    def state_dict(self) -> dict[str, Any]:
        return {
            'step': self.step,
            'model_state': self.model.state_dict(),
            'optimizer': self.optimizer.state_dict(),
            'samplers': [s.state_dict() for s in self.samplers],
            'best_state': self.best_state,
            'best_val_rmse': self.best_val_rmse,
            'best_val_score': self.best_val_score,
            'best_step': self.best_step,
            'bad_validations': self.bad_validations,
            'history': self.history,
            'world_size': self.world_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state['world_size'] != self.world_size:
            raise CheckpointError(
                f"the run was saved with {state['world_size']} process(es), "
                f"resumed with {self.world_size}; resume with the same "
                f"number so that task sampling continues exactly")
        self.step = state['step']
        self.model.load_state_dict(state['model_state'])
        self.optimizer.load_state_dict(state['optimizer'])
        # Only rank 0 saves, but every rank's samplers have drawn the same
        # number of tasks, so its counters serve all ranks.
        for sampler, saved in zip(self.samplers, state['samplers']):
            sampler.counter = saved['counter']
        self.best_state = state['best_state']
        self.best_val_rmse = state['best_val_rmse']
        # Runs saved before the score existed chose by the pooled RMSE.
        self.best_val_score = state.get('best_val_score',
                                        self.best_val_rmse)
        self.best_step = state['best_step']
        self.bad_validations = state['bad_validations']
        self.history = list(state['history'])

    def save(self) -> Optional[Path]:
        r"""Writes ``checkpoint.pt``: the best model (what
        :meth:`MetaMF.load` reads), the configuration and the full training
        state (what :meth:`resume` reads)."""
        if self.out_dir is None or self.rank != 0:
            return None
        payload = {
            'model_config': vars(self.config.model).copy(),
            'model_state': self.best_state,
            'train_config': self.config.to_dict(),
            'train_state': self.state_dict(),
        }
        path = save_checkpoint(payload, self.out_dir / 'checkpoint.pt')
        self._write_log()
        return path

    @classmethod
    def resume(cls, path, steps: Optional[int] = None,
               parts=None) -> Trainer:
        r"""A trainer that continues the run saved at ``path`` (its run
        folder is the checkpoint's folder), optionally with a new total
        number of steps."""
        payload = load_checkpoint(path)
        if 'train_state' not in payload:
            raise CheckpointError(f'{path} holds a model but no training '
                                  f'state; it cannot be resumed')
        config = TrainConfig.from_dict(payload['train_config'])
        if steps is not None:
            config.steps = steps
        trainer = cls(config, Path(path).parent, parts)
        trainer.load_state_dict(payload['train_state'])
        return trainer

    def _write_log(self) -> None:
        if not self.history:
            return
        path = self.out_dir / 'log.csv'
        with open(path, 'w', newline='') as handle:
            writer = csv.DictWriter(handle, fieldnames=list(self.history[0]))
            writer.writeheader()
            writer.writerows(self.history)

    def _write_curves(self) -> None:
        if not self.history:
            return
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        steps = [h['step'] for h in self.history]
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(steps, [h['train_rmse'] for h in self.history],
                label='train query RMSE')
        ax.plot(steps, [h['val_rmse'] for h in self.history],
                label='validation RMSE')
        ax.axvline(self.best_step, color='grey', ls=':', label='best')
        ax.set_xlabel('step')
        ax.set_ylabel('RMSE (original scale)')
        ax.legend()
        fig.tight_layout()
        fig.savefig(self.out_dir / 'curves.png', dpi=120)
        plt.close(fig)


def _distributed() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _copy_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _progress(enabled: bool, start: int, total: int):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, initial=start, unit='step', leave=False)

