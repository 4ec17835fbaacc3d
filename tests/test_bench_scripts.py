r"""Smoke runs of the speed benchmarks on tiny inputs, so that the scripts
behind ``make benchmark-speed`` keep working; their figures are not
checked here (speed belongs in the benchmarks, never in tests)."""
import csv
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str) -> str:
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    done = subprocess.run([sys.executable, str(ROOT / 'scripts' / script),
                           *args], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _rows(path: Path) -> list[dict]:
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def test_bench_adapt_smoke(tmp_path):
    out = _run('bench_adapt.py', '--datasets', '--sizes', '2000', '4000',
               '--methods', 'metamf', 'mf_fixed', '--threads', '1', '2',
               '--repeats', '1', '--copy-mib', '8', '--no-progress',
               '--stages-max-entries', '2000', '--out', str(tmp_path))
    rows = _rows(tmp_path / 'adapt.csv')
    assert {(r['method'], r['threads']) for r in rows} == {
        ('metamf', '1'), ('metamf', '2'), ('mf_fixed', '1')}
    assert {r['entries'] for r in rows} == {'2000', '4000'}
    stages = _rows(tmp_path / 'stages.csv')
    assert {r['entries'] for r in stages} == {'2000'}
    report = (tmp_path / 'adapt.md').read_text()
    for threads in (1, 2):
        assert f'MetaMF at {threads} thread(s): per-entry cost' in report
    assert 'target' in out


def test_bench_train_smoke(tmp_path):
    _run('bench_train.py', '--data-root', str(tmp_path / 'none'),
         '--batch-sizes', '2', '--task-sizes', '10', '20', '--num-steps',
         '1', '--batches', '1', '--repeats', '1', '--no-progress',
         '--out', str(tmp_path))
    rows = _rows(tmp_path / 'train.csv')
    assert len(rows) >= 2 and float(rows[0]['tasks_per_s']) > 0
