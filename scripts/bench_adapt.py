"""Adaptation speed: how long MetaMF takes to impute a matrix it has never
seen, against per-matrix baselines fitted to that matrix.

    python scripts/bench_adapt.py [--checkpoint runs/demo/checkpoint.pt]
    python scripts/bench_adapt.py --quick            # smoke run, < 2 min

For MovieLens 100K ``u1`` and Douban ``standard`` (when their files are
found) and synthetic low-rank matrices of 10^4 .. 10^7 observed entries,
in one process and on the same tensors, it times

* ``metamf``: ``MetaMF.impute`` (encoder, priors, refinement, predictions
  with their standard deviations) of the query entries; the checkpoint of
  ``--checkpoint``, else an untrained default ``MetaMF()``: the time does
  not depend on the weights;
* ``mf_grid``: ``make_baseline('mf')`` fitted (its full rank x reg grid on
  held-out entries, then the refit) and predicting the same entries;
* ``mf_fixed``: one fit of ``make_baseline('mf', rank=..., reg=...)``;
* ``surprise_svd``: scikit-surprise's SVD (``pip install
  scikit-surprise``), fitted and predicting.

Each time is the median of ``--repeats`` runs (fewer when a run exceeds
``--budget`` seconds, but MetaMF at least ``--min-repeats``, 3 by default:
the first run on a large matrix can be much slower, as it faults in the
memory later runs reuse: 30-40 s against 20-28 s at 10^7 entries on the
development machine, and a median of three leaves it out); the time of
the first run is reported beside it, as what a single call costs. MetaMF
runs at every thread count of ``--threads``
(default: one thread and every core), the baselines at those of
``--baseline-threads`` (default: one; scikit-surprise is single-threaded
whatever the setting), and each ratio compares runs at the same count.
By default the process keeps freed memory for reuse
(:func:`gnn_metamf.memory.keep_freed_memory`, as the command line does).
It also reports the peak resident memory of each measurement (VmHWM,
reset before it; with freed memory kept, the high-water mark of the
process so far, an upper bound), the RMSE of every method on the real
splits (MetaMF's only with ``--checkpoint``: untrained, its RMSE means
nothing), MetaMF's time per stage (timers around its parts) beside a
floor per stage (the bare gathers, sums and sparse products that the
stage must do at that size), and the memory bandwidth of one large copy.
Writes ``adapt.csv``, ``stages.csv``, ``adapt.md`` and
``adapt_config.json`` into ``--out``.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Iterator
from unittest import mock

import numpy as np
import torch
from tqdm import tqdm

from gnn_metamf import MatrixGraph
from gnn_metamf.baselines import make_baseline
from gnn_metamf.datasets import DatasetNotFoundError, load_dataset
from gnn_metamf.memory import keep_freed_memory
from gnn_metamf.nn import BipartiteOps, MetaMF
from gnn_metamf.nn.normalize import MatrixScale

REAL = (('ml-100k', 'u1'), ('douban', 'standard'))
METHODS = ('metamf', 'mf_grid', 'mf_fixed', 'surprise_svd')
STAGES = ('index', 'normalize', 'encoder', 'priors', 'refine',
          'covariance', 'predict')
GIB = 1 << 30


def main() -> int:
    args = _parse()
    # Before any large allocation: later tensors reuse freed pages.
    kept = keep_freed_memory() if args.keep_freed_memory else False
    torch.set_num_threads(args.threads[0])
    device = torch.device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = (MetaMF.load(args.checkpoint) if args.checkpoint else MetaMF())
    model = model.to(device).eval()
    if args.num_steps is not None:
        model.refine.num_steps = args.num_steps
    config = {**vars(args), 'torch': torch.__version__,
              'cpu': _cpu_name(), 'platform': platform.platform(),
              'load_before': os.getloadavg(), 'kept_freed_memory': kept,
              'model': model.config}
    which = (f'checkpoint {args.checkpoint}' if args.checkpoint else
             'untrained MetaMF()')
    _say(f'config    threads {" ".join(map(str, args.threads))}  '
         f'baselines at {" ".join(map(str, args.baseline_threads))}  '
         f'device {device}  '
         f'load {_load()}  model {which}')

    bandwidth = _copy_bandwidth(device, args.copy_mib)
    _say(f'bandwidth copy {bandwidth / 1e9:.1f} GB/s  (one {args.copy_mib} '
          f'MiB copy, read + write)')
    _warm_up(model, args, device)

    rows, stage_rows = [], []
    # One matrix in memory at a time, so that peak memory is its own.
    total = len(args.datasets if args.datasets is not None else REAL) + \
        len(args.sizes)
    for name, graph in tqdm(_matrices(args), total=total, desc='matrices',
                            unit='matrix', leave=False,
                            disable=not args.progress):
        graph = graph.to(device)
        query = graph.edge_label_index
        counts = sorted(set(args.threads) | set(args.baseline_threads))
        results = {}
        for threads in counts:
            torch.set_num_threads(threads)
            for method in args.methods:
                wanted = (args.threads if method == 'metamf'
                          else args.baseline_threads)
                if threads not in wanted or \
                        not _wanted(method, graph.num_entries, args):
                    continue
                result = _measure(method, model, graph, query, args,
                                  device)
                if result is not None:
                    results[method, threads] = result
        for (method, threads), res in results.items():
            row = _row(name, graph, method, threads, res,
                       results.get(('metamf', threads)), bandwidth,
                       labelled=graph.get('edge_label') is not None,
                       trained=bool(args.checkpoint))
            rows.append(row)
            _say(_format(row))
        for threads in args.threads:
            if ('metamf', threads) not in results or not args.stages or \
                    graph.num_entries > args.stages_max_entries:
                continue
            torch.set_num_threads(threads)
            for row in _stages(model, graph, query, args, device):
                row = {'matrix': name, 'entries': graph.num_entries,
                       'threads': threads, **row}
                stage_rows.append(row)
                _say(_format_stage(row))
        torch.set_num_threads(args.threads[0])
        del graph, query, results
    config['load_after'] = os.getloadavg()

    _write_csv(out / 'adapt.csv', rows)
    _write_csv(out / 'stages.csv', stage_rows)
    targets = _targets(rows)
    for line in targets:
        _say(f'target    {line}')
    (out / 'adapt.md').write_text(_markdown(rows, stage_rows, targets,
                                            config, bandwidth))
    (out / 'adapt_config.json').write_text(
        json.dumps(config, indent=2, default=str) + '\n')
    _say(f'wrote     {out / "adapt.md"}  {out / "adapt.csv"}  '
          f'{out / "stages.csv"}')
    return 0


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='\n'.join(__doc__.splitlines()[2:4]))
    parser.add_argument('--checkpoint', default=None,
                        help='MetaMF checkpoint (default: untrained MetaMF)')
    parser.add_argument('--num-steps', type=int, default=None,
                        help="refinement steps (default: the model's)")
    parser.add_argument('--out', default='results/speed')
    parser.add_argument('--data-root', default=None)
    parser.add_argument('--datasets', nargs='*', default=None,
                        help='real matrices as name:split (default: '
                             'ml-100k:u1 douban:standard, when found)')
    parser.add_argument('--sizes', nargs='*', type=float,
                        default=[1e4, 1e5, 1e6, 1e7],
                        help='observed entries of the synthetic matrices')
    parser.add_argument('--degree', type=float, default=50.0,
                        help='mean observed entries per row (and column) '
                             'of the synthetic matrices, which grow in '
                             'rows and columns at this degree')
    parser.add_argument('--methods', nargs='*', default=list(METHODS),
                        choices=METHODS)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--budget', type=float, default=60.0,
                        help='seconds after which a measurement stops '
                             'repeating, once it ran --min-repeats times')
    parser.add_argument('--min-repeats', type=int, default=3,
                        help="MetaMF's runs at least (baselines: 1)")
    parser.add_argument('--mf-grid-max-entries', type=float, default=2e5,
                        help='largest matrix for the MF grid search')
    parser.add_argument('--mf-fixed-max-entries', type=float, default=1e7)
    parser.add_argument('--surprise-max-entries', type=float, default=1e6)
    parser.add_argument('--mf-rank', type=int, default=10)
    parser.add_argument('--mf-reg', type=float, default=3.0)
    parser.add_argument('--stages', action=argparse.BooleanOptionalAction,
                        default=True, help='MetaMF time per stage + floors')
    parser.add_argument('--stages-max-entries', type=float, default=1e7)
    parser.add_argument('--threads', type=int, nargs='+',
                        default=sorted({1, len(os.sched_getaffinity(0))}),
                        help="MetaMF's thread counts (default: 1 and the "
                             "cores this process may use: %(default)s)")
    parser.add_argument('--baseline-threads', type=int, nargs='+',
                        default=[1], help="the baselines' thread counts")
    parser.add_argument('--keep-freed-memory',
                        action=argparse.BooleanOptionalAction, default=True,
                        help='let glibc keep freed memory for reuse, as the '
                             'command line does (gnn_metamf.memory); peak '
                             'RSS is then the high-water mark of the '
                             'process so far, an upper bound')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--copy-mib', type=int, default=512)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--progress', action=argparse.BooleanOptionalAction,
                        default=True, help='progress bar on stderr')
    parser.add_argument('--quick', action='store_true',
                        help='sizes 1e4 1e5, 2 repeats, grid up to 2e4 '
                             'entries (< 2 min)')
    args = parser.parse_args()
    if args.quick:
        args.sizes = [s for s in args.sizes if s <= 1e5] or [1e4]
        args.repeats = min(args.repeats, 2)
        args.mf_grid_max_entries = min(args.mf_grid_max_entries, 2e4)
        args.copy_mib = min(args.copy_mib, 128)
    return args


# ----------------------------------------------------------------------
# Matrices.

def _matrices(args) -> Iterator[tuple[str, MatrixGraph]]:
    specs = (REAL if args.datasets is None else
             [tuple(spec.partition(':')[::2]) for spec in args.datasets])
    for name, split in specs:
        try:
            graph = load_dataset(name, args.data_root, split=split or None,
                                 download=False)
        except DatasetNotFoundError as error:
            _say(f'skip      {name}:{split}: not found ({error})'
                  .splitlines()[0])
            continue
        yield f'{name}:{split}', graph
        del graph
    for size in args.sizes:
        start = time.perf_counter()
        graph = low_rank_matrix(int(size), degree=args.degree,
                                seed=args.seed)
        _say(f'generated synthetic {_si(graph.num_entries)}  '
              f'{graph.num_rows} x {graph.num_cols}  query '
              f'{graph.edge_label_index.size(1)}  '
              f'{time.perf_counter() - start:.1f} s')
        yield f'synthetic-{_si(size)}', graph
        del graph


def low_rank_matrix(num_entries: int, degree: float = 50.0, rank: int = 5,
                    test_fraction: float = 0.2, noise: float = 0.5,
                    skew: float = 1.0, seed: int = 0) -> MatrixGraph:
    r"""A square rating matrix with ``num_entries`` observed entries and
    ``test_fraction / (1 - test_fraction)`` as many query entries, on
    about ``(observed + query) / degree`` rows and as many columns, drawn
    in time and memory linear in the entries (:func:`make_synthetic` draws
    every cell). Cells are drawn with probability proportional to
    :math:`a_i p_j`, log-normal row activities and column popularities
    (few long rows and columns, many short), without repetition; ratings
    :math:`\mathrm{clip}(\mathrm{round}(3.5 + b_i + c_j + 0.9\,u_i^\top
    v_j/\sqrt{k} + \sigma\varepsilon), 1, 5)`. Entries come sorted by
    (row, column), as rating files usually are."""
    rng = np.random.default_rng(seed)
    total = math.ceil(num_entries / (1 - test_fraction))
    side = max(2, math.ceil(total / degree))
    activity = [np.exp(skew * rng.standard_normal(side)) for _ in range(2)]
    prob = [a / a.sum() for a in activity]
    keys = np.empty(0, dtype=np.int64)
    while keys.size < total:  # Draw, drop repeats, top up.
        need = int((total - keys.size) * 1.1) + 16
        row = rng.choice(side, size=need, p=prob[0])
        col = rng.choice(side, size=need, p=prob[1])
        keys = np.unique(np.concatenate([keys, row * side + col]))
    keys = np.sort(rng.choice(keys, size=total, replace=False))
    row, col = keys // side, keys % side

    u, v = (rng.standard_normal((side, rank)) for _ in range(2))
    b, c = (0.4 * rng.standard_normal(side) for _ in range(2))
    value = np.empty(total, dtype=np.float32)
    step = 1 << 22
    for start in range(0, total, step):  # Bounded temporary memory.
        r, s = row[start:start + step], col[start:start + step]
        score = (3.5 + b[r] + c[s] +
                 0.9 * np.einsum('ek,ek->e', u[r], v[s]) / math.sqrt(rank)
                 + noise * rng.standard_normal(r.size))
        value[start:start + step] = np.clip(np.rint(score), 1, 5)
    is_query = np.zeros(total, dtype=bool)
    is_query[rng.choice(total, size=total - num_entries,
                        replace=False)] = True
    index = torch.from_numpy(np.stack([row, col]))
    value = torch.from_numpy(value)
    query = torch.from_numpy(is_query)
    return MatrixGraph(index[:, ~query], value[~query], side, side,
                       edge_label_index=index[:, query],
                       edge_label=value[query])


# ----------------------------------------------------------------------
# Measurements.

def _wanted(method: str, entries: int, args) -> bool:
    limit = {'mf_grid': args.mf_grid_max_entries,
             'mf_fixed': args.mf_fixed_max_entries,
             'surprise_svd': args.surprise_max_entries}.get(method)
    return limit is None or entries <= limit


def _runner(method: str, model: MetaMF, graph, query, args):
    if method == 'metamf':
        return lambda: model.impute(graph, query)[0]
    if method == 'mf_grid':
        kwargs = {}
    elif method == 'mf_fixed':
        kwargs = dict(rank=args.mf_rank, reg=args.mf_reg)
    else:
        kwargs = {}
    name = 'surprise_svd' if method == 'surprise_svd' else 'mf'

    def run():
        return make_baseline(name, seed=args.seed, **kwargs).fit(
            graph).predict(query)
    return run


def _measure(method, model, graph, query, args, device):
    run = _runner(method, model, graph, query, args)
    times = []
    _reset_peak(device)
    try:
        while True:
            _sync(device)
            start = time.perf_counter()
            pred = run()
            _sync(device)
            times.append(time.perf_counter() - start)
            least = args.min_repeats if method == 'metamf' else 1
            if len(times) >= args.repeats or (
                    sum(times) > args.budget and len(times) >= least):
                break
    except ImportError as error:
        _say(f'skip      {method}: {error}')
        return None
    return {'times': times, 'pred': pred.detach().cpu(),
            'peak': _peak(device)}


def _row(name, graph, method, threads, res, base, bandwidth, labelled,
         trained):
    times = res['times']
    median = statistics.median(times)
    entries = graph.num_entries
    rmse = None
    if labelled and (method != 'metamf' or trained):
        err = res['pred'].double() - graph.edge_label.cpu().double()
        rmse = float(err.pow(2).mean().sqrt())
    base_median = statistics.median(base['times']) if base else None
    return {
        'matrix': name, 'entries': entries, 'rows': graph.num_rows,
        'cols': graph.num_cols, 'queries': int(graph.edge_label_index.size(1)),
        'method': method, 'threads': threads, 'reps': len(times),
        'median_s': median, 'first_s': times[0],
        'min_s': min(times), 'per_entry_us': 1e6 * median / entries,
        'entries_per_s': entries / median,
        'x_metamf': median / base_median if base_median else None,
        'rmse': rmse, 'peak_rss_gib': res['peak'] / GIB,
        'bytes_per_entry_at_bandwidth': bandwidth * median / entries,
    }


def _warm_up(model, args, device):
    graph = low_rank_matrix(2000, seed=1).to(device)
    for method in args.methods:
        try:
            _runner(method, model, graph, graph.edge_label_index, args)()
        except ImportError as error:
            _say(f'warning   {method} unavailable: {error}')


# ----------------------------------------------------------------------
# Stages of MetaMF and their floors.

def _stages(model, graph, query, args, device) -> list[dict]:
    r"""MetaMF's time per stage, by timers around its parts (module hooks
    and wrapped functions; the profiler's event records would not fit in
    memory at 10^7 entries): ``predict`` is the rest of ``impute``."""
    reps = max(1, min(args.repeats, 3))
    spent: dict[str, float] = {}
    measured: dict[str, list[float]] = {stage: [] for stage in STAGES}
    with _stage_timers(model, spent, device):
        for _ in range(reps):
            spent.clear()
            _sync(device)
            start = time.perf_counter()
            model.impute(graph, query)
            _sync(device)
            total = time.perf_counter() - start
            spent['predict'] = total - sum(spent.values())
            for stage in STAGES:
                measured[stage].append(1e3 * spent.get(stage, 0.0))
    floors = _floors(model, graph, query, device)
    out = []
    for stage in STAGES:
        floor, note = floors.get(stage, (None, ''))
        time_ms = statistics.median(measured[stage])
        out.append({'stage': stage, 'time_ms': time_ms, 'floor_ms': floor,
                    'x_floor': (time_ms / floor if time_ms and floor
                                else None), 'floor': note})
    total = sum(r['time_ms'] for r in out)
    floor = sum(f for f, _ in floors.values() if f)
    out.append({'stage': 'total', 'time_ms': total, 'floor_ms': floor,
                'x_floor': total / floor, 'floor': 'sum of the floors'})
    return out


@contextlib.contextmanager
def _stage_timers(model, spent: dict, device):
    def add(stage, start):
        _sync(device)
        spent[stage] = spent.get(stage, 0.0) + time.perf_counter() - start

    def timed(stage, fn):
        def wrapper(*args, **kwargs):
            _sync(device)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                add(stage, start)
        return wrapper

    starts = {}

    def pre_hook(stage):
        def hook(module, args):  # Returns None: the inputs stay as they are.
            _sync(device)
            starts[stage] = time.perf_counter()
        return hook

    def post_hook(stage):
        def hook(module, args, output):
            add(stage, starts[stage])
        return hook

    handles = []
    modules = {'encoder': [getattr(model, 'encoder', None)],
               'priors': [getattr(model, 'row_prior', None),
                          getattr(model, 'col_prior', None)],
               'refine': [model.refine]}
    for stage, mods in modules.items():
        for module in filter(None, mods):
            handles.append(module.register_forward_pre_hook(pre_hook(stage)))
            handles.append(module.register_forward_hook(post_hook(stage)))
    from_graph = BipartiteOps.__dict__['from_graph']
    fit = MatrixScale.__dict__['fit']
    with mock.patch.object(BipartiteOps, 'from_graph', classmethod(
            timed('index', from_graph.__func__))), \
            mock.patch.object(MatrixScale, 'fit', classmethod(
                timed('normalize', fit.__func__))), \
            mock.patch.object(model.refine, 'posterior_covariance', timed(
                'covariance', model.refine.posterior_covariance)):
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()


def _floors(model, graph, query, device) -> dict:
    r"""Per stage: the time of the bare sums, gathers and sparse products
    the stage must do, one pass over the entries (or query pairs) each,
    counted from the model's configuration, and what was counted. Gathers
    write into buffers allocated beforehand, as the model's do."""
    ops = BipartiteOps.from_graph(graph, 'sparse')
    E, N, M = graph.num_entries, graph.num_rows, graph.num_cols
    gen = torch.Generator(device=device).manual_seed(0)
    out = {}

    def timed(fn, reps=3):
        fn()
        _sync(device)
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            fn()
            _sync(device)
            times.append(time.perf_counter() - start)
        return 1e3 * statistics.median(times)

    def gather(table, index, buf):
        return timed(lambda: torch.index_select(table, 0, index, out=buf))

    def randn(*shape):
        return torch.randn(*shape, generator=gen, device=device)

    if model.prior == 'encoder':
        C = model.encoder.hidden_channels
        L = len(model.encoder.layers)
        x_edge = randn(E, C)
        sums = timed(lambda: ops.row_sum(x_edge)) + \
            timed(lambda: ops.col_sum(x_edge))
        gathers = (gather(randn(N, C), ops.row, x_edge) +
                   gather(randn(M, C), ops.col, x_edge))
        out['encoder'] = (L * (sums + gathers) + sums,
                          f'{L} layers x (row + column sums, 2 gathers) + '
                          f'read-out sums, width {C}')
        del x_edge
    K1 = model.rank + 1
    P = K1 * (K1 + 1) // 2
    T = model.refine.num_steps
    z = graph.edge_value.float()
    feats = {w: (randn(N, w), randn(M, w)) for w in (P + K1, K1, P)}
    step = (timed(lambda: ops.rows_from_cols(feats[P + K1][1])) +
            timed(lambda: ops.rows_from_cols(feats[K1][1], z)) +
            timed(lambda: ops.cols_from_rows(feats[P + K1][0])) +
            timed(lambda: ops.cols_from_rows(feats[K1][0], z)))
    out['refine'] = (T * step, f'{T} steps x 2 sides x (Gram + right-hand '
                               f'side products, widths {P + K1}, {K1})')
    out['covariance'] = (
        timed(lambda: ops.rows_from_cols(feats[P][1])) +
        timed(lambda: ops.cols_from_rows(feats[P][0])),
        f'2 Gram products, width {P}')
    # Per query pair: the mean needs K + 2 numbers of its row and of its
    # column, the variance a covariance and a design vector of each.
    chunk = query[:, :1 << 18]  # impute's chunk of query pairs
    total = 0.0
    for width in (K1 + 1, P + K1):
        buf = torch.empty(chunk.size(1), width, device=device)
        total += (gather(randn(N, width), chunk[0], buf) +
                  gather(randn(M, width), chunk[1], buf))
    out['predict'] = (total * query.size(1) / max(chunk.size(1), 1),
                      f'gathers of the {query.size(1)} query pairs\' row '
                      f'and column numbers, widths {K1 + 1}, {P + K1}')
    return out


# ----------------------------------------------------------------------
# Memory, bandwidth, machine.

def _reset_peak(device):
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: resets VmHWM, the peak resident set, to the current one.
        with open('/proc/self/clear_refs', 'w') as handle:
            handle.write('5')
    except OSError:
        pass


def _peak(device) -> int:
    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated(device)
    try:
        status = Path('/proc/self/status').read_text()
        return int(re.search(r'VmHWM:\s+(\d+)', status).group(1)) * 1024
    except (OSError, AttributeError):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _copy_bandwidth(device, mib: int = 512) -> float:
    r"""Bytes per second read plus written by one large tensor copy."""
    n = (mib << 20) // 4
    src = torch.ones(n, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(5):
        _sync(device)
        start = time.perf_counter()
        dst.copy_(src)
        _sync(device)
        times.append(time.perf_counter() - start)
    return 2 * src.numel() * 4 / min(times)


def _cpu_name() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _load() -> str:
    return ' '.join(f'{x:.2f}' for x in os.getloadavg())


# ----------------------------------------------------------------------
# Output.

def _say(line: str):
    tqdm.write(line)


def _si(x: float) -> str:
    exp = int(round(math.log10(x))) if x > 0 else 0
    return f'1e{exp}' if abs(x - 10 ** exp) < 1e-6 * x else f'{int(x)}'


def _fmt(value, spec: str) -> str:
    return '-' if value is None else format(value, spec)


def _format(row: dict) -> str:
    return (f"adapt     {row['matrix']:<18} {row['entries']:>9}  "
            f"{row['method']:<13} threads {row['threads']}  reps "
            f"{row['reps']}  first {row['first_s']:9.4f} s  median "
            f"{row['median_s']:9.4f} s  {row['per_entry_us']:7.3f} us/entry"
            f"  x_metamf {_fmt(row['x_metamf'], '7.2f')}  rmse "
            f"{_fmt(row['rmse'], '.4f')}  peak {row['peak_rss_gib']:.2f} GiB"
            f"  bandwidth {row['bytes_per_entry_at_bandwidth']:.0f} B/entry")


def _format_stage(row: dict) -> str:
    return (f"stage     {row['matrix']:<18} threads {row['threads']}  "
            f"{row['stage']:<11} "
            f"{_fmt(row['time_ms'], '9.2f')} ms  floor "
            f"{_fmt(row['floor_ms'], '8.2f')} ms  x_floor "
            f"{_fmt(row['x_floor'], '6.1f')}")


def _write_csv(path: Path, rows: list[dict]):
    if not rows:
        return
    with open(path, 'w', newline='') as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _targets(rows: list[dict]) -> list[str]:
    r"""The issue's targets, once per MetaMF thread count. scikit-surprise
    is single-threaded, so its time is the same at any setting."""
    out = []
    svd = {r['matrix']: r for r in rows if r['method'] == 'surprise_svd'}
    for threads in sorted({r['threads'] for r in rows
                           if r['method'] == 'metamf'}):
        meta = {r['matrix']: r for r in rows
                if r['method'] == 'metamf' and r['threads'] == threads}
        at = f'MetaMF at {threads} thread(s)'
        for name, _ in REAL:
            matrix = next((m for m in meta if m.startswith(name)), None)
            if matrix in svd:
                ratio = svd[matrix]['median_s'] / meta[matrix]['median_s']
                out.append(f'{matrix}, {at}: surprise SVD fit / MetaMF '
                           f'impute = {ratio:.1f}x (target >= 5x): '
                           f'{"met" if ratio >= 5 else "missed"}')
        synth = sorted((r for m, r in meta.items()
                        if m.startswith('synthetic')),
                       key=lambda r: r['entries'])
        if len(synth) > 1:
            costs = [r['per_entry_us'] for r in synth]
            spread = max(costs) / min(costs)
            out.append(f'{at}: per-entry cost {_si(synth[0]["entries"])}..'
                       f'{_si(synth[-1]["entries"])} entries: '
                       f'{min(costs):.3f}..{max(costs):.3f} us, spread '
                       f'{spread:.2f}x (target <= 2x): '
                       f'{"met" if spread <= 2 else "missed"}')
        for r in synth:
            if r['entries'] >= 9.5e6:
                out.append(f'{at}: {r["entries"]} entries: peak RSS '
                           f'{r["peak_rss_gib"]:.2f} GiB (target <= 16 '
                           f'GiB): '
                           f'{"met" if r["peak_rss_gib"] <= 16 else "missed"}')
    return out


def _markdown(rows, stage_rows, targets, config, bandwidth) -> str:
    lines = ['# Adaptation speed', '',
             f"CPU {config['cpu']}; MetaMF at "
             f"{', '.join(map(str, config['threads']))} thread(s), "
             f"baselines at "
             f"{', '.join(map(str, config['baseline_threads']))}; device "
             f"{config['device']}, torch {config['torch']}; load average "
             f"{config['load_before'][0]:.2f} before, "
             f"{config['load_after'][0]:.2f} after; freed memory kept "
             f"for reuse: {'yes' if config['kept_freed_memory'] else 'no'}"
             f"; copy bandwidth "
             f"{bandwidth / 1e9:.1f} GB/s. Model: "
             f"{config['checkpoint'] or 'untrained MetaMF()'}. Medians "
             f"of up to {config['repeats']} runs.", '',
             '| matrix | entries | method | threads | reps | first s | '
             'median s | us/entry | x MetaMF | RMSE | peak RSS GiB |',
             '|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|']
    for r in rows:
        lines.append(
            f"| {r['matrix']} | {r['entries']} | {r['method']} | "
            f"{r['threads']} | {r['reps']} | {r['first_s']:.4f} | "
            f"{r['median_s']:.4f} | "
            f"{r['per_entry_us']:.3f} | {_fmt(r['x_metamf'], '.2f')} | "
            f"{_fmt(r['rmse'], '.4f')} | {r['peak_rss_gib']:.2f} |")
    lines += ['', '## Targets', ''] + [f'- {t}' for t in targets]
    if stage_rows:
        lines += ['', '## MetaMF stages against their floors', '',
                  'Stage times by timers around the parts of one impute '
                  '(predict: the rest); a floor is the time of the '
                  'bare gathers, sums and sparse products the stage must '
                  'do (dense matmuls and Cholesky solves excluded).', '',
                  '| matrix | threads | stage | ms | floor ms | x floor | '
                  'floor counts |', '|---|---:|---|---:|---:|---:|---|']
        for r in stage_rows:
            lines.append(
                f"| {r['matrix']} | {r['threads']} | {r['stage']} | "
                f"{_fmt(r['time_ms'], '.2f')} | "
                f"{_fmt(r['floor_ms'], '.2f')} | "
                f"{_fmt(r['x_floor'], '.1f')} | {r['floor']} |")
    return '\n'.join(lines) + '\n'


if __name__ == '__main__':
    sys.exit(main())
