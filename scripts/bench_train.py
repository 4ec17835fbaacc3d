"""Meta-training throughput and memory of MetaMF.

    python scripts/bench_train.py [--out results/speed]
    python scripts/bench_train.py --quick            # smoke run, < 2 min

Times full optimisation steps (loss on the query entries, backward
through every refinement step, Adam) on fixed batches of tasks drawn from
the meta-train part of MovieLens 100K (synthetic data when its files are
missing), one factor at a time around the default (16 tasks of 20-100 rows
and columns, 3 refinement steps): the batch size, the task size and the
number of refinement steps, each with and without ``checkpoint_steps``.

For each setting it reports tasks/s, support entries/s, the bytes of the
tensors autograd saves for the backward pass (counted by
``torch.autograd.graph.saved_tensors_hooks``, each storage once, the
parameters left out: deterministic) and the peak resident memory of the
timed steps (VmHWM, reset before them). Writes ``train.csv`` and
``train.md`` into ``--out``.
"""
from __future__ import annotations

import argparse
import csv
import os
import re
import statistics
import sys
import time
from pathlib import Path

import torch
from torch_geometric.data import Batch
from tqdm import tqdm

from gnn_metamf.data import TaskSampler, split_rows_cols
from gnn_metamf.datasets import DatasetNotFoundError, load_dataset
from gnn_metamf.nn import MetaMF

DEFAULT = dict(batch_size=16, rows=(20, 100), steps=3)


def main() -> int:
    args = _parse()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    part, source = _meta_train_part(args)
    tqdm.write(f'config    threads {args.threads}  data {source}  '
               f'{part.num_rows} x {part.num_cols}  load {_load()}')

    settings = _settings(args)
    rows = []
    for setting in tqdm(settings, desc='settings', leave=False,
                        disable=not args.progress):
        row = _measure(part, setting, args)
        rows.append(row)
        tqdm.write(_format(row))

    _write_csv(out / 'train.csv', rows)
    (out / 'train.md').write_text(_markdown(rows, source, args))
    tqdm.write(f'wrote     {out / "train.md"}  {out / "train.csv"}')
    return 0


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='\n'.join(__doc__.splitlines()[2:4]))
    parser.add_argument('--out', default='results/speed')
    parser.add_argument('--data-root', default=None)
    parser.add_argument('--batch-sizes', nargs='*', type=int,
                        default=[4, 16, 64])
    parser.add_argument('--task-sizes', nargs='*', type=int,
                        default=[20, 100, 100, 200, 200, 400],
                        help='pairs LO HI of rows (and columns) per task')
    parser.add_argument('--num-steps', nargs='*', type=int,
                        default=[1, 3, 5, 10, 20],
                        help='refinement steps')
    parser.add_argument('--batches', type=int, default=4,
                        help='distinct batches per setting, cycled')
    parser.add_argument('--repeats', type=int, default=8,
                        help='timed optimisation steps per setting')
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--progress', action=argparse.BooleanOptionalAction,
                        default=True, help='progress bar on stderr')
    parser.add_argument('--quick', action='store_true',
                        help='fewer settings and steps (< 2 min)')
    args = parser.parse_args()
    if len(args.task_sizes) % 2:
        parser.error(f'--task-sizes takes pairs LO HI, got '
                     f'{args.task_sizes}')
    if args.quick:
        args.batch_sizes = [4, 16]
        args.task_sizes = [20, 100]
        args.num_steps = [1, 3, 10]
        args.batches, args.repeats = 2, 3
    return args


def _meta_train_part(args):
    try:
        graph = load_dataset('ml-100k', args.data_root, split='all',
                             download=False)
        source = 'ml-100k (meta-train rows and columns)'
    except DatasetNotFoundError:
        graph = load_dataset('synthetic', split='all', seed=args.seed)
        source = 'synthetic (meta-train rows and columns)'
    split = split_rows_cols(graph, (0.6, 0.2, 0.2), seed=0)
    return split.part(graph, 'train'), source


def _settings(args) -> list[dict]:
    sizes = [tuple(args.task_sizes[i:i + 2])
             for i in range(0, len(args.task_sizes), 2)]
    grid = []
    for batch_size in args.batch_sizes:
        grid.append({**DEFAULT, 'batch_size': batch_size})
    for rows in sizes:
        grid.append({**DEFAULT, 'rows': rows})
    for steps in args.num_steps:
        grid.append({**DEFAULT, 'steps': steps})
    unique = []
    for setting in grid:  # The default appears once per factor.
        if setting not in unique:
            unique.append(setting)
    return [{**s, 'checkpoint': ck} for s in unique for ck in (False, True)]


def _measure(part, setting, args) -> dict:
    sampler = TaskSampler(part, num_rows=setting['rows'],
                          num_cols=setting['rows'], support_fraction=0.7,
                          seed=args.seed)
    batches = [Batch.from_data_list(sampler.next_batch(
        setting['batch_size'])) for _ in range(args.batches)]
    torch.manual_seed(args.seed)
    model = MetaMF(num_steps=setting['steps'],
                   checkpoint_steps=setting['checkpoint'])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(batch):
        loss, _ = model.loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    saved = saved_bytes(model, batches[0])
    step(batches[0])  # Warm-up: allocator, lazy state of Adam.
    _reset_peak()
    times, tasks, entries = [], 0, 0
    for k in range(args.repeats):
        batch = batches[k % len(batches)]
        start = time.perf_counter()
        step(batch)
        times.append(time.perf_counter() - start)
        tasks += setting['batch_size']
        entries += batch.num_entries
    total = sum(times)
    return {
        'batch_size': setting['batch_size'],
        'task_rows': f"{setting['rows'][0]}-{setting['rows'][1]}",
        'steps': setting['steps'], 'checkpoint': setting['checkpoint'],
        'support_entries': round(entries / args.repeats),
        'median_step_s': statistics.median(times),
        'tasks_per_s': tasks / total, 'entries_per_s': entries / total,
        'saved_mib': saved / 2 ** 20, 'peak_rss_gib': _peak() / 2 ** 30,
    }


def saved_bytes(model: torch.nn.Module, batch) -> int:
    r"""Bytes of the tensors saved for the backward pass of
    ``model.loss(batch)``, each storage counted once, parameters excluded.
    Tensors saved inside checkpointed steps are recomputed, not kept, and
    are not seen."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        seen[key] = max(seen.get(key, 0), storage.nbytes())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss, _ = model.loss(batch)
    del loss
    return sum(n for key, n in seen.items() if key not in params)


def _reset_peak():
    try:  # Linux: resets VmHWM, the peak resident set, to the current one.
        with open('/proc/self/clear_refs', 'w') as handle:
            handle.write('5')
    except OSError:
        pass


def _peak() -> int:
    try:
        status = Path('/proc/self/status').read_text()
        return int(re.search(r'VmHWM:\s+(\d+)', status).group(1)) * 1024
    except (OSError, AttributeError):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _load() -> str:
    return ' '.join(f'{x:.2f}' for x in os.getloadavg())


def _format(row: dict) -> str:
    return (f"train     batch {row['batch_size']:>3}  tasks "
            f"{row['task_rows']:>7}  steps {row['steps']:>2}  checkpoint "
            f"{'yes' if row['checkpoint'] else 'no ':<3}  support "
            f"{row['support_entries']:>6}  {row['tasks_per_s']:7.1f} tasks/s"
            f"  {row['entries_per_s']:9.0f} entries/s  saved "
            f"{row['saved_mib']:7.2f} MiB  peak {row['peak_rss_gib']:.2f} "
            f"GiB")


def _write_csv(path: Path, rows: list[dict]):
    with open(path, 'w', newline='') as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _markdown(rows: list[dict], source: str, args) -> str:
    lines = ['# Meta-training throughput', '',
             f'{args.threads} thread(s), data {source}, load average '
             f'{_load()} at the end; {args.repeats} timed steps per row '
             f'(loss, backward, Adam). "saved" is the autograd graph: the '
             f'bytes saved for backward.', '',
             '| batch | rows/cols | steps | checkpoint | support entries | '
             'tasks/s | entries/s | saved MiB | peak RSS GiB |',
             '|---:|---|---:|---|---:|---:|---:|---:|---:|']
    for r in rows:
        lines.append(
            f"| {r['batch_size']} | {r['task_rows']} | {r['steps']} | "
            f"{'yes' if r['checkpoint'] else 'no'} | "
            f"{r['support_entries']} | {r['tasks_per_s']:.1f} | "
            f"{r['entries_per_s']:.0f} | {r['saved_mib']:.2f} | "
            f"{r['peak_rss_gib']:.2f} |")
    return '\n'.join(lines) + '\n'


if __name__ == '__main__':
    sys.exit(main())
