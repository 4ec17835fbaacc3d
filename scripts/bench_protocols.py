"""Benchmark protocols A, B and C: the meta-learned model, its ablations and
per-matrix baselines on exactly the same tasks (see gnn_metamf/protocols/).

    python scripts/bench_protocols.py --protocol all --out results
    python scripts/bench_protocols.py --protocol A C --jobs 2 --steps 1200
    python scripts/bench_protocols.py --quick          # smoke run, ~1-2 min

Meta-trains seven runs into <out>/runs/<name>/ (ml-100k:u1 and
douban:standard, each full / prior_only / no_encoder; douban+yahoo_music
full), reusing any run whose checkpoint.pt exists, then scores

  A  few-shot imputation of unseen matrices: fixed meta-test tasks of
     ml-100k:u1 and douban:standard at 10%, 30%, 50% support and 3 support
     entries per row;
  B  transfer: the ml-100k model on Douban and Yahoo Music's standard
     splits, the douban+yahoo model on MovieLens 100K u1;
  C  one large matrix: the ml-100k models impute u1.test from u1.base.

Writes tables (protocol_*.md, results.md), CSV and JSON files of every
number, plots and environment.json into <out>, and prints the targets.
Needs the rating files under --data-root or $GNN_METAMF_DATA.
"""
from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys

# One thread per process: the benchmark runs --jobs processes side by side.
os.environ.setdefault('OMP_NUM_THREADS', '1')

import torch  # noqa: E402

from gnn_metamf.protocols import (  # noqa: E402
    PROTOCOLS,
    SUPPORTS,
    BenchmarkPlan,
    available_baselines,
    run_benchmark,
)

QUICK = dict(steps=20, num_tasks=10,
             train_options=dict(val_every=10, val_tasks=8, batch_size=4),
             split_baselines=('global_mean', 'biases'),
             refinement_steps=(0, 2, 5))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=' '.join(__doc__.split('\n\n')[0].split()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split('\n\n', 1)[1])
    parser.add_argument('--protocol', nargs='+', default=['all'],
                        choices=list(PROTOCOLS) + ['all'],
                        help='protocols to run (default: all)')
    parser.add_argument('--out', default=None,
                        help='output folder (default: results, or '
                             'results/quick with --quick)')
    parser.add_argument('--steps', type=int, default=None,
                        help='meta-training steps per run (default: 1200, '
                             '20 with --quick)')
    parser.add_argument('--jobs', type=int, default=2,
                        help='processes at once, one thread each '
                             '(default: 2)')
    parser.add_argument('--num-tasks', type=int, default=None,
                        help='protocol A tasks per dataset and setting '
                             '(default: 200, 10 with --quick)')
    parser.add_argument('--seed', type=int, default=0,
                        help='training seed; test tasks use 2000 + seed')
    parser.add_argument('--supports', nargs='+', default=list(SUPPORTS),
                        choices=list(SUPPORTS),
                        help='protocol A support settings')
    parser.add_argument('--baselines', nargs='+', default=None,
                        help=f'per-matrix baselines (default: '
                             f'{" ".join(available_baselines())})')
    parser.add_argument('--data-root', default=None)
    parser.add_argument('--quick', action='store_true',
                        help='smoke run: 20 steps, 10 tasks, cheap '
                             'baselines on the large matrices')
    parser.add_argument('--no-progress', action='store_true')
    parser.add_argument('--debug', action='store_true',
                        help='show tracebacks instead of one-line errors')
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format='%(message)s',
                        stream=sys.stdout)
    protocols = PROTOCOLS if 'all' in args.protocol else tuple(
        dict.fromkeys(args.protocol))
    options = dict(QUICK) if args.quick else {}
    if args.steps is not None:
        options['steps'] = args.steps
    if args.num_tasks is not None:
        options['num_tasks'] = args.num_tasks
    if args.baselines is not None:
        options['task_baselines'] = tuple(args.baselines)
        options['split_baselines'] = tuple(args.baselines)
    try:
        plan = BenchmarkPlan(protocols=protocols, seed=args.seed,
                             data_root=args.data_root,
                             supports=tuple(args.supports), **options)
    except ValueError as error:
        parser.error(str(error))
    out = args.out or ('results/quick' if args.quick else 'results')

    runs = plan.runs()
    print(f'protocols {" ".join(plan.protocols)}  runs {len(runs)}  steps '
          f'{plan.steps}  tasks {plan.num_tasks}  jobs {args.jobs}  out '
          f'{out}')
    command = shlex.join([sys.executable] + sys.argv)
    try:
        summary = run_benchmark(plan, out, jobs=args.jobs, command=command,
                                progress=not args.no_progress)
    except (ValueError, OSError) as error:  # Data, checkpoints, arguments.
        if args.debug:
            raise
        print(f'bench_protocols: error: {error}', file=sys.stderr)
        return 2

    print()
    print('targets')
    for t in summary['targets']:
        print(f"  {t['status']:7s}  {t['target']}")
        print(f"           {t['measured']}")
    print(f"done in {summary['seconds']:.0f} s; tables in {out}/results.md")
    return 0


if __name__ == '__main__':
    sys.exit(main())
