r"""Meta-training runs of the benchmark: :func:`train_run` trains, resumes
or reuses the run of one :class:`~gnn_metamf.config.TrainConfig`."""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Optional

from ..checkpoint import load_checkpoint
from ..config import TrainConfig
from ..train import Trainer

log = logging.getLogger(__name__)

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
