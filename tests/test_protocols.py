import math

import numpy as np
import pytest
import torch

from gnn_metamf.baselines import BaselineImputer
from gnn_metamf.config import ModelConfig
from gnn_metamf.evaluate import evaluate_tasks
from gnn_metamf.nn import MetaMF
from gnn_metamf.protocols import (
    BenchmarkPlan,
    RunSpec,
    check_targets,
    few_shot_tasks,
    markdown_table,
    paired_differences,
    run_benchmark,
    score_tasks,
    tasks_fingerprint,
    train_run,
)

DATA = 'synthetic:standard'


def tiny_plan(**kwargs):
    base = dict(
        steps=2, num_tasks=4, few_shot=(DATA,),
        transfer=(((DATA,), DATA, ('full', 'prior_only')),), large=DATA,
        task_baselines=('global_mean', 'biases'),
        split_baselines=('global_mean',), refinement_steps=(0, 1),
        train_options=dict(val_every=1, val_tasks=2, batch_size=2),
        model_options=dict(rank=3, hidden_channels=8, num_layers=1,
                           num_steps=2),
        task_options=dict(num_rows=(8, 20), num_cols=(8, 20)))
    return BenchmarkPlan(**{**base, **kwargs})


@pytest.fixture(scope='module')
def config():
    return tiny_plan().train_config(RunSpec((DATA,), 'full'))


def test_plan_runs_each_training_once():
    plan = BenchmarkPlan()
    names = [s.name for s in plan.runs()]
    assert names == [
        'ml-100k-u1_full', 'ml-100k-u1_prior_only', 'ml-100k-u1_no_encoder',
        'douban-standard_full', 'douban-standard_prior_only',
        'douban-standard_no_encoder',
        'douban-standard+yahoo_music-standard_full']
    assert len(BenchmarkPlan(protocols=('C',)).runs()) == 3
    assert len(BenchmarkPlan(protocols=('b',)).runs()) == 4


def test_plan_variant_configs():
    plan = BenchmarkPlan(steps=7)
    full = plan.train_config(RunSpec(('ml-100k:u1',), 'full'))
    assert full.steps == 7 and full.threads == 1
    assert full.model.num_steps == ModelConfig().num_steps
    assert full.model.prior == 'encoder'
    assert plan.train_config(RunSpec(('x',), 'prior_only')).model \
        .num_steps == 0
    assert plan.train_config(RunSpec(('x',), 'no_encoder')).model \
        .prior == 'fixed'


def test_plan_rejects_unknown_names():
    with pytest.raises(ValueError, match=r"unknown protocol\(s\) \['D'\]"):
        BenchmarkPlan(protocols=('A', 'D'))
    with pytest.raises(ValueError, match='unknown support setting'):
        BenchmarkPlan(supports=('20%',))
    with pytest.raises(ValueError, match=r"unknown baseline\(s\) \['svd'\]"):
        BenchmarkPlan(task_baselines=('mf', 'svd'))


def test_few_shot_tasks_fixed_and_support(config):
    first = few_shot_tasks(config, DATA, '10%', 5)
    again = few_shot_tasks(config, DATA, '10%', 5)
    assert tasks_fingerprint(first) == tasks_fingerprint(again)
    for task in first:
        assert 8 <= task.num_rows <= 20 and 1 <= task.num_cols <= 20
        total = task.num_entries + task.edge_label.numel()
        assert task.num_entries == max(1, math.floor(0.1 * total + 0.5))
    per_row = few_shot_tasks(config, DATA, '3/row', 5)
    assert tasks_fingerprint(per_row) != tasks_fingerprint(first)
    for task in per_row:
        support = torch.bincount(task.edge_index[0],
                                 minlength=task.num_rows)
        query = torch.bincount(task.edge_label_index[0],
                               minlength=task.num_rows)
        assert support.max() <= 3
        assert bool(((query == 0) | (support == 3)).all())
    with pytest.raises(ValueError, match='unknown support setting'):
        few_shot_tasks(config, DATA, '5%', 1)


@pytest.mark.parametrize('method', ['model', 'biases'])
def test_score_tasks_agrees_with_evaluate_tasks(config, method):
    torch.manual_seed(0)
    imputer = MetaMF(rank=3, hidden_channels=8, num_layers=1).eval() \
        if method == 'model' else BaselineImputer(method)
    tasks = few_shot_tasks(config, DATA, '30%', 5)
    ours = score_tasks(imputer, tasks, batch_size=2)
    reference = evaluate_tasks(imputer, tasks)
    for key in ('num_entries', 'rmse', 'mae', 'nll', 'task_rmse_mean',
                'task_rmse_std'):
        assert ours[key] == pytest.approx(reference[key], rel=1e-5), key
    assert len(ours['task_rmse']) == 5
    assert ours['task_rmse_se'] == pytest.approx(
        ours['task_rmse_std'] / math.sqrt(5))


def test_paired_differences():
    out = paired_differences({'full': [1.0, 2.0, 3.0],
                              'mf': [2.0, 2.0, 5.0]})
    assert out['full'] == {'diff_mean': 0.0, 'diff_std': 0.0,
                           'diff_se': 0.0, 'share_worse': 0.0}
    assert out['mf']['diff_mean'] == pytest.approx(1.0)
    assert out['mf']['diff_std'] == pytest.approx(1.0)
    assert out['mf']['diff_se'] == pytest.approx(1 / math.sqrt(3))
    assert out['mf']['share_worse'] == pytest.approx(2 / 3)
    assert paired_differences({'mf': [1.0]}) == {}
    with pytest.raises(ValueError, match='mf was scored on 2 tasks, full '
                                         'on 3'):
        paired_differences({'full': [1.0, 2.0, 3.0], 'mf': [1.0, 2.0]})


def _row(method, rmse, **extra):
    kind = 'model' if method in ('full', 'prior_only', 'no_encoder') \
        else 'baseline'
    return {'method': method, 'rmse': rmse, 'kind': kind, **extra}


def test_check_targets_met_and_missed():
    a = [_row('full', 0.90, dataset='d', setting='10%'),
         _row('prior_only', 0.95, dataset='d', setting='10%'),
         _row('mf', 0.94, dataset='d', setting='10%'),
         _row('full', 0.90, dataset='d', setting='30%'),
         _row('mf', 0.89, dataset='d', setting='30%')]
    b = [_row('full', 0.70, target='douban:standard',
              trained_on='ml-100k:u1'),
         _row('biases', 0.73, target='douban:standard',
              trained_on='per-matrix'),
         _row('full', 19.5, target='yahoo_music:standard',
              trained_on='ml-100k:u1'),
         _row('biases', 19.0, target='yahoo_music:standard',
              trained_on='per-matrix')]
    status = {t['target']: t for t in check_targets(a, b, [])}
    beats_a = status['A: full beats every baseline and both ablations']
    assert beats_a['status'] == 'missed'
    assert beats_a['measured'].startswith('1/2 comparisons won')
    assert 'd 30%: full 0.9000 vs mf 0.8900' in beats_a['measured']
    tenth = status['A d 10% support: full RMSE >= 3% below the best '
                   'per-matrix baseline']
    assert tenth['status'] == 'met' and '+4.3% below' in tenth['measured']
    assert status['B douban:standard: full (trained on ml-100k:u1) RMSE '
                  '< 0.721']['status'] == 'met'
    assert status['B yahoo_music:standard: full (trained on ml-100k:u1) '
                  'RMSE < 19.1']['status'] == 'missed'
    assert status['C: full beats every baseline and both ablations'][
        'status'] == 'not run'
    assert status['C ml-100k:u1: full RMSE < 0.9']['status'] == 'not run'


def test_markdown_table_formats_and_missing_values():
    table = markdown_table(
        [{'m': 'full', 'rmse': 0.91234}, {'m': 'mf', 'rmse': math.nan},
         {'m': 'mean'}], [('m', 'method'), ('rmse', 'RMSE', '.3f')])
    assert table.splitlines() == ['| method | RMSE |', '|---|---:|',
                                  '| full | 0.912 |', '| mf | - |',
                                  '| mean | - |']


def test_train_run_reuses_and_rejects_other_config(tmp_path, config):
    row = train_run(config, tmp_path / 'run')
    assert row['status'] == 'trained' and row['steps'] == 2
    assert row['run'] == 'run' and row['datasets'] == DATA
    again = train_run(config, tmp_path / 'run')
    assert again['status'] == 'reused'
    assert again['best_val_rmse'] == row['best_val_rmse']
    other = tiny_plan(steps=3).train_config(RunSpec((DATA,), 'full'))
    with pytest.raises(ValueError, match='steps: stored 2, wanted 3'):
        train_run(other, tmp_path / 'run')


def test_run_benchmark_end_to_end(tmp_path):
    plan = tiny_plan()
    summary = run_benchmark(plan, tmp_path)
    assert [r['status'] for r in summary['training']] == ['trained'] * 3

    a = summary['A']
    methods = ['full', 'prior_only', 'no_encoder', 'global_mean', 'biases']
    assert [r['method'] for r in a[:5]] == methods
    assert len(a) == 4 * 5
    for setting in ('10%', '30%', '50%', '3/row'):
        rows = [r for r in a if r['setting'] == setting]
        assert len({r['tasks_sha'] for r in rows}) == 1
        full = next(r for r in rows if r['method'] == 'full')
        assert full['diff_vs_full_mean'] == 0.0 and 'nll' in full
        assert 'nll' not in next(r for r in rows if r['kind'] ==
                                 'baseline')
    per_task = [r for r in summary['per_task'] if r['method'] == 'biases']
    assert len(per_task) == 4 * 4
    assert [r['method'] for r in summary['B']] == ['full', 'prior_only',
                                                   'global_mean']
    assert [r['method'] for r in summary['C']] == [
        'full', 'prior_only', 'no_encoder', 'global_mean']
    assert [(r['evaluation'][0], r['num_steps'])
            for r in summary['steps']] == [('A', 0), ('A', 1), ('C', 0),
                                           ('C', 1)]
    assert len(summary['targets']) == 7  # 3 + one dataset + 2 + 1

    for name in ('protocol_a.md', 'protocol_a.csv', 'protocol_a_tasks.csv',
                 'protocol_a_per_task.csv', 'protocol_b.md', 'protocol_c.md',
                 'refinement_steps.csv', 'training.csv', 'targets.md',
                 'results.md', 'environment.json', 'rmse_vs_support.png',
                 'rmse_vs_steps.png', 'learning_curves.png'):
        assert (tmp_path / name).is_file(), name
    results = (tmp_path / 'results.md').read_text()
    assert '## Protocol A' in results and 'GLocal-K' not in results

    # A rerun reuses every run and reproduces every number.
    again = run_benchmark(tiny_plan(protocols=('A',)), tmp_path)
    assert [r['status'] for r in again['training']] == ['reused'] * 3
    np.testing.assert_allclose([r['rmse'] for r in again['A']],
                               [r['rmse'] for r in a])
    with pytest.raises(ValueError, match='another configuration'):
        run_benchmark(tiny_plan(steps=3), tmp_path)


@pytest.mark.slow
def test_run_benchmark_parallel_matches_serial(tmp_path):
    plan = tiny_plan(protocols=('A', 'C'), supports=('30%',))
    serial = run_benchmark(plan, tmp_path / 'serial')
    parallel = run_benchmark(plan, tmp_path / 'parallel', jobs=2)
    for key in ('A', 'C', 'steps'):
        assert [r['rmse'] for r in parallel[key]] == pytest.approx(
            [r['rmse'] for r in serial[key]]), key
    assert [r['best_val_rmse'] for r in parallel['training']] == \
        pytest.approx([r['best_val_rmse'] for r in serial['training']])
