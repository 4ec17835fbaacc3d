"""``gnn-metamf evaluate``: scores a checkpoint on datasets."""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import torch

from ..checkpoint import load_checkpoint
from ..config import TrainConfig
from ..datasets import load_dataset
from ..datasets.root import write_atomic
from ..evaluate import evaluate_split, evaluate_tasks
from ..nn import MetaMF
from ..train import TEST_SEED, load_parts, task_sampler
from .common import (
    PROG,
    CLIError,
    Formatter,
    dataset_spec,
    finite_or_none,
    natural_int,
    positive_int,
    same_file,
)

PROTOCOLS = ('split', 'tasks')

_METRICS = ('rmse', 'mae', 'nll', 'cover50', 'cover90')

_DESCRIPTION = """\
Score a trained model on datasets, in each dataset's original scale.

Two protocols:
  split  impute the dataset's standard test entries from its training
         entries (MovieLens 100K u1, the Douban, Flixster and Yahoo!
         Music splits of Monti et al., synthetic's 20% test entries).
  tasks  meta-test tasks: sub-matrices drawn from the rows and columns
         the training run set aside as its meta-test part (the split
         settings and task sizes are read from the checkpoint), each
         imputing part of its entries from the rest.
By default a dataset whose split has test entries is scored with split,
any other with tasks.

Columns: entries scored, RMSE, MAE, the Gaussian negative log-likelihood
per entry (NLL) and the shares of entries inside the central 50% and 90%
predictive intervals (cover50, cover90; 0.5 and 0.9 when calibrated).
"""

_EPILOG = """\
examples:
  gnn-metamf evaluate --checkpoint runs/ml100k/checkpoint.pt \\
      --dataset ml-100k --dataset douban --json results.json
  gnn-metamf evaluate --checkpoint runs/ml100k/checkpoint.pt \\
      --dataset ml-100k:all --protocol tasks --num-tasks 500
"""


def add_parser(commands, parents) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        'evaluate', parents=parents, formatter_class=Formatter,
        help='score a trained model on datasets', description=_DESCRIPTION,
        epilog=_EPILOG)
    parser.add_argument('--checkpoint', required=True, metavar='PATH',
                        help='checkpoint.pt of a training run')
    parser.add_argument('--dataset', required=True, action='append',
                        type=dataset_spec, metavar='NAME[:SPLIT]',
                        help='dataset to score, optionally with a split '
                             '(e.g. ml-100k:u1); repeat for several')
    parser.add_argument('--protocol', choices=PROTOCOLS,
                        help='split or tasks, see above (default: split '
                             'when the dataset has test entries, else '
                             'tasks)')
    parser.add_argument('--num-tasks', type=positive_int, default=200,
                        metavar='N',
                        help='meta-test tasks per dataset for --protocol '
                             'tasks (default: %(default)s)')
    parser.add_argument('--num-steps', type=natural_int, metavar='N',
                        help="refinement steps (default: the checkpoint's)")
    parser.add_argument('--data-root', metavar='DIR',
                        help="folder of raw dataset files (default: the "
                             "training run's, else $GNN_METAMF_DATA, else "
                             "datasets/)")
    parser.add_argument('--json', metavar='FILE',
                        help='also write the numbers to FILE as JSON')
    parser.add_argument('--threads', type=positive_int, metavar='N',
                        help="torch threads (default: torch's choice)")
    parser.set_defaults(run=run_evaluate)
    return parser


def run_evaluate(args: argparse.Namespace) -> int:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    checkpoint = Path(args.checkpoint)
    if args.json is not None and same_file(Path(args.json), checkpoint):
        raise CLIError(f'--json {args.json} is the checkpoint; choose '
                       f'another file')
    model = MetaMF.load(checkpoint)
    state = load_checkpoint(checkpoint).get('train_config')
    config = TrainConfig.from_dict(state) if state else None
    root = args.data_root
    if root is None and config is not None:
        root = config.data_root

    results = []
    for spec in args.dataset:
        protocol, metrics = _evaluate(model, spec, args.protocol, config,
                                      root, args)
        if not results:  # The header waits until a dataset has loaded.
            print(f"{'dataset':<20} {'protocol':<8} {'entries':>8}" +
                  ''.join(f' {name:>7}' for name in _METRICS))
        results.append({'dataset': spec, 'protocol': protocol, **metrics})
        print(f"{spec:<20} {protocol:<8} {metrics['num_entries']:>8d}" +
              ''.join(f' {metrics.get(name, math.nan):>7.4f}'
                      for name in _METRICS))

    if args.json is not None:
        report = {'checkpoint': str(checkpoint),
                  'num_steps': args.num_steps,
                  'results': [{k: finite_or_none(v) for k, v in r.items()}
                              for r in results]}
        write_atomic(Path(args.json),
                     (json.dumps(report, indent=2) + '\n').encode())
    return 0


def _evaluate(model: MetaMF, spec: str, protocol, config, root,
              args) -> tuple[str, dict]:
    name, _, split = spec.partition(':')
    if protocol != 'tasks':
        graph = load_dataset(name, root, split=split or None)
        if graph.get('edge_label') is not None:
            _warn_if_seen(spec, config)
            return 'split', evaluate_split(model, graph, args.num_steps)
        if protocol == 'split':
            raise CLIError(f'--dataset {spec} has no test entries, which '
                           f'--protocol split needs; choose a split that '
                           f'has them or --protocol tasks')

    if config is None:
        _warn(f'{args.checkpoint} holds no training configuration; tasks '
              f'use the default split and task sizes')
        config = TrainConfig()
    # The same data, split and task sizes as the training run, on the
    # meta-test part, which training never saw.
    config = replace(config, datasets=(spec,), data_root=root)
    test = load_parts(config)[spec]['test']
    sampler = task_sampler(config, test, TEST_SEED + config.seed)
    tasks = sampler.fixed_tasks(args.num_tasks)
    return 'tasks', evaluate_tasks(model, tasks, num_steps=args.num_steps)


def _warn_if_seen(spec: str, config) -> None:
    name = spec.partition(':')[0]
    trained = {} if config is None else {
        s.partition(':')[0]: s.partition(':')[2] or 'all'
        for s in config.datasets}
    if trained.get(name) == 'all':
        _warn(f"{spec}: the checkpoint was meta-trained on all of {name}'s "
              f"entries, its test entries included, so this score is "
              f"optimistic; --protocol tasks scores unseen rows and columns")


def _warn(message: str) -> None:
    print(f'{PROG}: warning: {message}', file=sys.stderr)
