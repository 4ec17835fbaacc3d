"""The main job (`make demo`): meta-train on MovieLens 100K, then impute
matrices the model has never seen.

    python scripts/demo.py [--steps 1200] [--out runs/demo]

1. Meta-trains MetaMF on sub-matrices of the meta-train part of MovieLens
   100K ``u1.base`` (rows and columns split 60/20/20 into meta-train,
   -validation and -test parts; no ``u1.test`` entry is ever seen). When no
   MovieLens file can be found or fetched, it says so loudly and uses the
   synthetic dataset instead.
2. Scores the model, and the per-matrix baselines, on 200 fixed meta-test
   tasks (sub-matrices whose rows and columns it never saw), and on the
   standard test split of every dataset it can find: MovieLens 100K ``u1``
   (one large matrix), and Douban and Yahoo Music (other datasets and
   rating scales, transferred without any tuning).
3. Prints a table and writes ``results.md`` and ``results.json`` beside the
   checkpoint.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from gnn_metamf.baselines import BaselineImputer
from gnn_metamf.config import TrainConfig
from gnn_metamf.datasets import DatasetNotFoundError, load_dataset
from gnn_metamf.evaluate import evaluate_split, evaluate_tasks
from gnn_metamf.train import TEST_SEED, Trainer, load_parts, task_sampler

TRANSFER = (('douban', 'standard'), ('yahoo_music', 'standard'),
            ('flixster', 'standard'))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--steps', type=int, default=1200)
    parser.add_argument('--out', default='runs/demo')
    parser.add_argument('--data-root', default=None)
    parser.add_argument('--test-tasks', type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()

    dataset = 'ml-100k:u1'
    try:
        load_dataset('ml-100k', args.data_root, split='u1')
    except DatasetNotFoundError as error:
        print('=' * 72)
        print('NO MOVIELENS 100K FOUND: the demo runs on SYNTHETIC data.')
        print(f'({error})')
        print('=' * 72)
        dataset = 'synthetic'

    config = TrainConfig(datasets=(dataset,), data_root=args.data_root,
                         steps=args.steps, val_every=100, patience=5)
    print(f'meta-training on {dataset} for up to {config.steps} steps, '
          f'run folder {args.out}')
    parts = load_parts(config)
    trainer = Trainer(config, args.out, parts)
    result = trainer.fit(on_validation=_print_record, progress=True)
    print(f'best validation RMSE {result.best_val_rmse:.4f} at step '
          f'{result.best_step} ({time.perf_counter() - start:.0f} s)')

    model = trainer.model
    rows = []
    test_part = parts[dataset]['test']
    tasks = task_sampler(config, test_part, TEST_SEED + config.seed
                         ).fixed_tasks(args.test_tasks)
    rows.append(_row(f'{dataset} meta-test tasks', 'MetaMF',
                     evaluate_tasks(model, tasks)))
    for name, baseline in _baselines():
        rows.append(_row(f'{dataset} meta-test tasks', name,
                         evaluate_tasks(baseline, tasks)))

    targets = ([('ml-100k', 'u1')] if dataset != 'synthetic' else
               [('synthetic', 'standard')]) + list(TRANSFER)
    for name, split in targets:
        try:
            graph = load_dataset(name, args.data_root, split=split,
                                 download=False)
        except DatasetNotFoundError:
            print(f'{name}: not found under the data root, skipped')
            continue
        label = f'{name} {split} test split'
        rows.append(_row(label, 'MetaMF', evaluate_split(model, graph)))
        for base_name, baseline in _baselines():
            rows.append(_row(label, base_name,
                             evaluate_split(baseline, graph)))

    table = _table(rows)
    print(table)
    out = Path(args.out)
    (out / 'results.md').write_text(table + '\n')
    (out / 'results.json').write_text(json.dumps(rows, indent=2) + '\n')
    print(f'done in {time.perf_counter() - start:.0f} s; results in '
          f'{out / "results.md"}')
    return 0


def _baselines():
    r"""Per-matrix baselines, each fitted on every test matrix's support."""
    return [(name, BaselineImputer(name))
            for name in ('global_mean', 'biases', 'mf')]


def _print_record(record: dict) -> None:
    # tqdm.write keeps the line apart from the progress bar.
    tqdm.write(f"step {record['step']:5d}  train_loss "
               f"{record['train_loss']:.4f}  train_rmse "
               f"{record['train_rmse']:.4f}  val_rmse "
               f"{record['val_rmse']:.4f}  tasks/s "
               f"{record['tasks_per_s']:.1f}")


def _row(target: str, method: str, metrics: dict) -> dict:
    return {'target': target, 'method': method, **metrics}


def _table(rows: list[dict]) -> str:
    lines = ['| target | method | entries | RMSE | MAE | NLL | in 50% | '
             'in 90% |', '|---|---|---:|---:|---:|---:|---:|---:|']
    for r in rows:
        lines.append(
            f"| {r['target']} | {r['method']} | {r['num_entries']} | "
            f"{r['rmse']:.4f} | {r['mae']:.4f} | {r.get('nll', 0):.3f} | "
            f"{r.get('cover50', 0):.3f} | {r.get('cover90', 0):.3f} |")
    return '\n'.join(lines)


if __name__ == '__main__':
    sys.exit(main())
