"""``gnn-metamf train``: meta-trains a model into a run folder."""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import MISSING, fields
from pathlib import Path

import torch.distributed as dist
from tqdm import tqdm

from ..checkpoint import CheckpointError, load_checkpoint
from ..config import ModelConfig, TaskConfig, TrainConfig
from ..data import COL_SAMPLING
from ..datasets import DATASET_NAMES
from ..nn import BACKENDS, LAYERS, SOLVERS
from ..nn.model import PRIORS
from ..train import Trainer, load_parts
from .common import (
    CLIError,
    Formatter,
    dataset_spec,
    natural_float,
    natural_int,
    positive_float,
    positive_int,
)

_SECTIONS = {'train': TrainConfig, 'model': ModelConfig, 'tasks': TaskConfig}

# One flag per configuration field: (help group, section, field, help,
# argparse keywords). The flag is the field's name with dashes unless the
# keywords name another. Defaults are read from the dataclasses, never
# repeated here; a flag left out keeps the dataclass default.
_OPTIONS = (
    ('data', 'train', 'datasets',
     f"datasets to meta-train on, from {', '.join(DATASET_NAMES)}; with "
     f":SPLIT only that split's training entries are used",
     dict(nargs='+', type=dataset_spec, metavar='NAME[:SPLIT]')),
    ('data', 'train', 'data_root',
     'folder holding one sub-folder of raw files per dataset; none means '
     '$GNN_METAMF_DATA, else the repository\'s datasets/',
     dict(metavar='DIR')),
    ('data', 'train', 'split_fractions',
     'shares of the rows, and of the columns, in the meta-train, '
     '-validation and -test parts of each dataset',
     dict(nargs=3, type=positive_float, metavar=('TRAIN', 'VAL', 'TEST'))),
    ('data', 'train', 'split_seed', 'seed of that row/column split',
     dict(type=natural_int, metavar='N')),
    ('optimisation', 'train', 'steps',
     'optimisation steps in all; a resumed run counts those already done',
     dict(type=positive_int, metavar='N')),
    ('optimisation', 'train', 'batch_size', 'tasks per step',
     dict(type=positive_int, metavar='N')),
    ('optimisation', 'train', 'lr', 'Adam learning rate',
     dict(type=positive_float, metavar='LR')),
    ('optimisation', 'train', 'weight_decay', 'Adam weight decay',
     dict(type=natural_float, metavar='W')),
    ('optimisation', 'train', 'grad_clip',
     'largest gradient norm; 0 turns clipping off',
     dict(type=natural_float, metavar='NORM')),
    ('optimisation', 'train', 'seed',
     'seed of the initialisation and of task sampling',
     dict(type=natural_int, metavar='N')),
    ('optimisation', 'train', 'threads', 'torch threads',
     dict(type=positive_int, metavar='N')),
    ('validation and early stopping', 'train', 'val_every',
     'steps between validations; each prints a line and saves the '
     'checkpoint', dict(type=positive_int, metavar='N')),
    ('validation and early stopping', 'train', 'val_tasks',
     'fixed validation tasks per dataset',
     dict(type=positive_int, metavar='N')),
    ('validation and early stopping', 'train', 'patience',
     'validations without improvement before training stops',
     dict(type=positive_int, metavar='N')),
    ('model', 'model', 'rank', 'latent dimension K of the factors',
     dict(type=positive_int, metavar='K')),
    ('model', 'model', 'hidden_channels',
     'width of the encoder and of the prior heads',
     dict(type=positive_int, metavar='N')),
    ('model', 'model', 'num_layers', 'encoder layers',
     dict(type=natural_int, metavar='N')),
    ('model', 'model', 'layer', 'encoder layer type',
     dict(choices=sorted(LAYERS))),
    ('model', 'model', 'num_steps',
     'MAP refinement steps; 0 predicts from the prior means',
     dict(type=natural_int, metavar='N')),
    ('model', 'model', 'solver',
     'refinement: als (exact per-row and per-column solves) or gd '
     '(gradient steps)', dict(choices=SOLVERS)),
    ('model', 'model', 'first_order',
     'first-order meta-gradient: cheaper, less exact', {}),
    ('model', 'model', 'checkpoint_steps',
     'recompute the refinement steps in the backward pass (less memory)',
     {}),
    ('model', 'model', 'backend',
     'sparse (CSR products) or scatter (gather and scatter)',
     dict(choices=BACKENDS)),
    ('model', 'model', 'clip',
     "clip predictions to each matrix's observed range", {}),
    ('model', 'model', 'prior',
     "where the factors' priors come from: encoder, or fixed (ablation: "
     "one meta-learned prior, no encoder)", dict(choices=PRIORS)),
    ('tasks', 'tasks', 'num_rows', 'rows per task, an inclusive range',
     dict(flag='--task-rows', nargs=2, type=positive_int,
          metavar=('LO', 'HI'))),
    ('tasks', 'tasks', 'num_cols', 'columns per task, an inclusive range',
     dict(flag='--task-cols', nargs=2, type=positive_int,
          metavar=('LO', 'HI'))),
    ('tasks', 'tasks', 'support_fraction',
     "share of a task's entries the model sees (it is scored on the rest); "
     "two numbers LO HI draw it per task from that range",
     dict(type=positive_float, nargs='+', metavar='F')),
    ('tasks', 'tasks', 'col_sampling',
     "degree (columns drawn by their number of entries: denser tasks) or "
     "uniform", dict(choices=COL_SAMPLING)),
)

#: The flag of each configuration field, by ``'section.field'``, e.g.
#: ``FLAGS['tasks.num_rows'] == '--task-rows'``; filled by the parser.
FLAGS: dict[str, str] = {}

# What --resume may change: the length of the run and where the data is.
_RESUMABLE = ('train.steps', 'train.data_root')

_DESCRIPTION = """\
Meta-train a model on sub-matrices ("tasks") drawn from rating datasets.

Each dataset's rows and columns are split into meta-train, -validation and
-test parts. Every step trains on a batch of tasks from the meta-train
parts; every --val-every steps the model is scored on fixed validation
tasks, one line is printed, and the run folder is updated:
checkpoint.pt (the best model and the training state), config.json (the
resolved configuration), log.csv (one row per validation) and curves.png.
"""

_EPILOG = """\
examples:
  gnn-metamf train --datasets ml-100k --steps 2000 --out runs/ml100k
  gnn-metamf train --datasets synthetic --steps 300 --rank 8
  gnn-metamf train --out runs/ml100k --resume --steps 4000
"""


def add_parser(commands, parents) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        'train', parents=parents, formatter_class=Formatter,
        help='meta-train a model', description=_DESCRIPTION,
        epilog=_EPILOG)
    groups = {}
    for group, section, name, text, keywords in _OPTIONS:
        keywords = dict(keywords)
        flag = keywords.pop('flag', '--' + name.replace('_', '-'))
        default = _default(section, name)
        if isinstance(default, bool):
            keywords['action'] = argparse.BooleanOptionalAction
        if group not in groups:
            groups[group] = parser.add_argument_group(group)
        dest = f'{section}.{name}'
        FLAGS[dest] = flag
        groups[group].add_argument(
            flag, dest=dest, default=argparse.SUPPRESS,
            help=f'{text} (default: {_show(default)})', **keywords)

    folder = parser.add_argument_group('run folder')
    folder.add_argument('--out', metavar='DIR',
                        help='run folder to write (default: '
                             'runs/<datasets>-<date>-<time>)')
    folder.add_argument('--resume', action='store_true',
                        help='continue the run in --out from its '
                             'checkpoint.pt; only --steps and --data-root '
                             'may be given with it')
    folder.add_argument('--no-progress', action='store_true',
                        help='do not show the progress bar')
    parser.set_defaults(run=run_train)
    return parser


def run_train(args: argparse.Namespace) -> int:
    # Under torchrun (WORLD_SIZE > 1) every process runs this command; they
    # join one process group, train together, and only rank 0 writes files
    # and prints.
    joined = False
    if int(os.environ.get('WORLD_SIZE', '1')) > 1 and dist.is_available() \
            and not dist.is_initialized():
        dist.init_process_group('gloo')
        joined = True
    try:
        return _train(args)
    finally:
        if joined:
            dist.destroy_process_group()


def _train(args: argparse.Namespace) -> int:
    given = {k: v for k, v in vars(args).items() if k in FLAGS}
    if args.resume:
        trainer = _resume(args, given)
        out = trainer.out_dir
        _echo(f'resume    from step {trainer.step} to '
              f'{trainer.config.steps}  {out / "checkpoint.pt"}')
    else:
        config = _config(given)
        out = Path(args.out) if args.out else _default_out(config)
        if (out / 'checkpoint.pt').exists():
            raise CLIError(f'--out {out} already holds a run; continue it '
                           f'with --resume or choose another --out')
        trainer = Trainer(config, out)
    _echo(f'config    {out / "config.json"}')

    try:
        result = trainer.fit(on_validation=_print_record,
                             progress=not args.no_progress)
    except KeyboardInterrupt:
        if trainer.rank == 0:
            print(f'interrupted at step {trainer.step}; continue from the '
                  f'last validation with: --out {out} --resume',
                  file=sys.stderr)
        return 130
    stopped = 'yes' if result.stopped_early else 'no'
    _echo(f'done      steps {result.steps}  best_step {result.best_step}  '
          f'best_val_rmse {result.best_val_rmse:.4f}  early_stop {stopped}  '
          f'checkpoint {out / "checkpoint.pt"}')
    return 0


def _config(given: dict) -> TrainConfig:
    config = TrainConfig()
    for dest, value in given.items():
        section, name = dest.split('.')
        target = config if section == 'train' else getattr(config, section)
        if name == 'support_fraction' and len(value) == 1:
            value = value[0]  # One number: a fixed fraction.
        setattr(target, name, tuple(value) if isinstance(value, list)
                else value)
    return config


def _resume(args: argparse.Namespace, given: dict) -> Trainer:
    if args.out is None:
        raise CLIError('--resume needs --out DIR, the run folder to '
                       'continue')
    other = [FLAGS[dest] for dest in given if dest not in _RESUMABLE]
    if other:
        raise CLIError(f'--resume continues the saved configuration, got '
                       f'{" ".join(other)}; only --steps and --data-root '
                       f'may be given with it')
    path = Path(args.out) / 'checkpoint.pt'
    parts = None
    if 'train.data_root' in given:
        state = load_checkpoint(path).get('train_config')
        if state is None:
            raise CheckpointError(f'{path} holds no training configuration; '
                                  f'it cannot be resumed')
        config = TrainConfig.from_dict(state)
        config.data_root = given['train.data_root']
        parts = load_parts(config)
    return Trainer.resume(path, steps=given.get('train.steps'), parts=parts)


def _default(section: str, name: str):
    field = {f.name: f for f in fields(_SECTIONS[section])}[name]
    if field.default is not MISSING:
        return field.default
    return field.default_factory()


def _show(value) -> str:
    if isinstance(value, bool):
        return 'on' if value else 'off'
    if isinstance(value, (tuple, list)):
        return ' '.join(str(v) for v in value)
    return 'none' if value is None else str(value)


def _default_out(config: TrainConfig) -> Path:
    names = '+'.join(spec.replace(':', '_') for spec in config.datasets)
    return Path('runs') / f'{names}-{time.strftime("%Y%m%d-%H%M%S")}'


def _print_record(record: dict) -> None:
    # With several datasets: each one's validation RMSE and the score that
    # chooses the best model (Trainer.validate).
    several = ''.join(f'  {key} {value:.4f}' for key, value in record.items()
                      if key.startswith('val_rmse:'))
    if several:
        several += f"  val_score {record['val_score']:.4f}"
    _echo(f"step {record['step']:5d}  train_loss {record['train_loss']:.4f}  "
          f"train_rmse {record['train_rmse']:.4f}  "
          f"val_rmse {record['val_rmse']:.4f}  "
          f"val_mae {record['val_mae']:.4f}{several}  "
          f"tasks/s {record['tasks_per_s']:.1f}")


def _echo(line: str) -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_rank():
        return
    # Through tqdm, so that the line does not break the progress bar.
    tqdm.write(line, file=sys.stdout)
