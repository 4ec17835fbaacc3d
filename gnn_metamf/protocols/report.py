r"""Reports of a benchmark: the target checks (:func:`check_targets`),
markdown tables and the per-protocol markdown writers,
:func:`write_reports`, and the plots."""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Iterable, Optional, Sequence

from .io import _read_json, _write_csv
from .plan import (
    _TARGET_A_MARGIN,
    _TARGET_C,
    _TARGETS_B,
    PROTOCOLS,
    PUBLISHED,
    VARIANTS,
)


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
