"""The ``gnn-metamf`` command line, run in-process through ``main``."""
import json
import math
import os
import re
import shutil
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import fields
from io import StringIO

import pandas as pd
import pytest

from gnn_metamf.checkpoint import CheckpointError
from gnn_metamf.cli import build_parser, main
from gnn_metamf.cli.train import FLAGS
from gnn_metamf.config import ModelConfig, TaskConfig, TrainConfig
from gnn_metamf.datasets import DatasetNotFoundError

# A model small enough to meta-train in about a second.
TINY = ['--datasets', 'synthetic', '--steps', '6', '--val-every', '3',
        '--val-tasks', '4', '--batch-size', '4', '--rank', '4',
        '--hidden-channels', '8', '--num-layers', '1', '--num-steps', '2',
        '--task-rows', '10', '30', '--task-cols', '10', '30']

STEP = re.compile(r'step +\d+  train_loss \d+\.\d{4}  train_rmse \d+\.\d{4}  '
                  r'val_rmse \d+\.\d{4}  val_mae \d+\.\d{4}  tasks/s \d+\.\d$')

ROWS = ['ann', 'bo', 'cy', 'dee', '007']
COLS = ['x,y', 'heat', '01', 'the film']


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    r"""One trained run folder, shared; returns it and the printed lines."""
    out = tmp_path_factory.mktemp('cli') / 'run'
    stdout, stderr = StringIO(), StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        code = main(['train', *TINY, '--out', str(out)])
    assert code == 0, stderr.getvalue()
    return out, stdout.getvalue().splitlines()


@pytest.fixture
def checkpoint(run):
    return str(run[0] / 'checkpoint.pt')


def cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code, err, *needles):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('gnn-metamf: error: '), err
    for needle in needles:
        assert needle in lines[0]


@pytest.fixture
def observed(tmp_path):
    r"""A 5 x 4 matrix with 9 observed entries and string keys, one of
    them with a comma and some with leading zeros."""
    pairs = [(0, 0), (0, 1), (1, 1), (1, 2), (2, 0), (2, 3), (3, 2),
             (4, 0), (4, 3)]
    frame = pd.DataFrame({'user': [ROWS[i] for i, _ in pairs],
                          'item': [COLS[j] for _, j in pairs],
                          'stars': [5, 4, 3, 2, 4, 1, 5, 3, 4]})
    path = tmp_path / 'observed.csv'
    frame.to_csv(path, index=False)
    return path


KEYS = ['--row-col', 'user', '--col-col', 'item', '--value-col', 'stars']


def test_cli_help_smoke_subprocess():
    env = dict(os.environ, OMP_NUM_THREADS='1')
    done = subprocess.run([sys.executable, '-m', 'gnn_metamf', '--help'],
                          capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert 'usage: gnn-metamf' in done.stdout
    for command in ('train', 'evaluate', 'impute'):
        assert command in done.stdout


@pytest.mark.parametrize('command', ['train', 'evaluate', 'impute'])
def test_cli_help_each_command(capsys, command):
    code, out, _ = cli(capsys, command, '--help')
    assert code == 0
    assert out.startswith(f'usage: gnn-metamf {command}')
    assert 'examples:' in out


def test_cli_train_defaults_from_config(capsys):
    _, out, _ = cli(capsys, 'train', '--help')
    text = ' '.join(out.split())  # Independent of the terminal width.
    config = TrainConfig()
    for flag, default in [
            ('--task-rows LO HI', ' '.join(map(str, config.tasks.num_rows))),
            ('--steps N', config.steps), ('--rank K', config.model.rank),
            ('--datasets NAME[:SPLIT] [NAME[:SPLIT] ...]',
             config.datasets[0])]:
        assert re.search(rf'{re.escape(flag)} [^(]*\(default: '
                         rf'{re.escape(str(default))}\)', text), flag


def test_cli_train_flag_for_every_config_field():
    build_parser()
    expected = {f'{section}.{f.name}'
                for section, cls in (('train', TrainConfig),
                                     ('model', ModelConfig),
                                     ('tasks', TaskConfig))
                for f in fields(cls) if f.name not in ('model', 'tasks')}
    assert set(FLAGS) == expected
    assert FLAGS['tasks.num_rows'] == '--task-rows'


def test_cli_train_run_folder(run):
    out, lines = run
    for name in ('checkpoint.pt', 'config.json', 'log.csv', 'curves.png'):
        assert (out / name).is_file()
    assert lines[0] == f'config    {out / "config.json"}'
    assert [line[:10] for line in lines[1:3]] == ['step     3', 'step     6']
    assert all(STEP.match(line) for line in lines[1:3])
    assert lines[3].startswith('done      steps 6  best_step ')
    assert lines[3].endswith(f'checkpoint {out / "checkpoint.pt"}')
    assert len(lines) == 4

    config = json.loads((out / 'config.json').read_text())
    assert config['datasets'] == ['synthetic']
    assert config['model']['rank'] == 4
    assert config['tasks']['num_rows'] == [10, 30]
    assert config['lr'] == 3e-3  # Untouched flags keep the defaults.
    assert len(pd.read_csv(out / 'log.csv')) == 2


def test_cli_train_resume(capsys, run, tmp_path):
    out = tmp_path / 'run'
    shutil.copytree(run[0], out)
    code, stdout, err = cli(capsys, 'train', '--out', out, '--resume',
                            '--steps', 9, '--no-progress')
    assert code == 0, err
    lines = stdout.splitlines()
    assert lines[0].startswith('resume    from step 6 to 9  ')
    assert STEP.match(lines[2]) and lines[2].startswith('step     9')
    assert lines[3].startswith('done      steps 9  ')

    # It continues exactly where a run of 9 steps would have been.
    straight = tmp_path / 'straight'
    assert cli(capsys, 'train', *TINY, '--steps', 9, '--no-progress',
               '--out', straight)[0] == 0
    resumed, direct = (pd.read_csv(p / 'log.csv').drop(columns='tasks_per_s')
                       for p in (out, straight))
    assert len(resumed) == 3
    pd.testing.assert_frame_equal(resumed, direct)


@pytest.mark.slow
def test_cli_train_torchrun_two_processes(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    out = tmp_path / 'run'
    done = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--standalone',
         '--nproc-per-node', '2', '-m', 'gnn_metamf', 'train', *TINY,
         '--no-progress', '--out', str(out)],
        capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    # Rank 0 alone prints and writes.
    assert sum(line.startswith('done ') for line in lines) == 1
    assert sum(bool(STEP.match(line)) for line in lines) == 2
    assert len(pd.read_csv(out / 'log.csv')) == 2


def test_cli_train_resume_refuses_other_flags(capsys, run, tmp_path):
    code, _, err = cli(capsys, 'train', '--out', run[0], '--resume',
                       '--lr', 0.1)
    assert_user_error(code, err, '--lr', 'only --steps and --data-root')
    code, _, err = cli(capsys, 'train', '--resume')
    assert_user_error(code, err, '--resume needs --out')
    code, _, err = cli(capsys, 'train', '--out', tmp_path, '--resume')
    assert_user_error(code, err, 'no checkpoint at')


def test_cli_train_refuses_existing_run(capsys, run):
    before = (run[0] / 'checkpoint.pt').read_bytes()
    code, _, err = cli(capsys, 'train', *TINY, '--out', run[0])
    assert_user_error(code, err, 'already holds a run', '--resume')
    assert (run[0] / 'checkpoint.pt').read_bytes() == before


def test_cli_without_command(capsys):
    code, _, err = cli(capsys)
    assert_user_error(code, err, 'COMMAND', 'gnn-metamf --help')


@pytest.mark.parametrize('args, needle', [
    (['--datasets', 'nope'], "unknown dataset 'nope'"),
    (['--steps', '0'], "argument --steps: expected an integer >= 1, got '0'"),
    (['--solver', 'newton'], "invalid choice: 'newton'"),
])
def test_cli_train_bad_arguments(capsys, tmp_path, args, needle):
    code, _, err = cli(capsys, 'train', *args, '--out', tmp_path / 'r')
    assert_user_error(code, err, needle)
    assert not (tmp_path / 'r').exists()


def test_cli_train_library_value_error(capsys, tmp_path):
    code, _, err = cli(capsys, 'train', *TINY, '--task-rows', 30, 10,
                       '--out', tmp_path / 'r')
    assert_user_error(code, err, '30')
    assert 'Traceback' not in err


def test_cli_evaluate_protocols(capsys, checkpoint, tmp_path):
    report = tmp_path / 'results.json'
    code, out, err = cli(capsys, 'evaluate', '--checkpoint', checkpoint,
                         '--dataset', 'synthetic', '--dataset',
                         'synthetic:all', '--num-tasks', 4, '--json', report)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ['dataset', 'protocol', 'entries', 'rmse',
                                'mae', 'nll', 'cover50', 'cover90']
    assert lines[1].split()[:2] == ['synthetic', 'split']
    assert lines[2].split()[:2] == ['synthetic:all', 'tasks']
    # The model was trained on every synthetic entry, test entries too.
    assert 'warning: synthetic:' in err and 'optimistic' in err

    results = json.loads(report.read_text())['results']
    assert [r['protocol'] for r in results] == ['split', 'tasks']
    assert results[1]['num_tasks'] == 4
    for result in results:
        assert result['num_entries'] > 0
        for key in ('rmse', 'mae', 'nll', 'cover50', 'cover90'):
            assert math.isfinite(result[key])
        assert f"{result['rmse']:.4f}" in out


def test_cli_evaluate_tasks_are_fixed(capsys, checkpoint):
    args = ('evaluate', '--checkpoint', checkpoint, '--dataset', 'synthetic',
            '--protocol', 'tasks', '--num-tasks', 3, '--num-steps', 1)
    first = cli(capsys, *args)
    assert first[0] == 0 and first[1].splitlines()[1].split()[1] == 'tasks'
    assert cli(capsys, *args)[1] == first[1]


def test_cli_evaluate_split_needs_test_entries(capsys, checkpoint):
    code, _, err = cli(capsys, 'evaluate', '--checkpoint', checkpoint,
                       '--dataset', 'synthetic:all', '--protocol', 'split')
    assert_user_error(code, err, 'has no test entries', '--protocol tasks')


def test_cli_evaluate_dataset_not_found(capsys, checkpoint, monkeypatch):
    def missing(name, *args, **kwargs):
        raise DatasetNotFoundError(f'dataset {name!r} is missing u1.base')
    monkeypatch.setattr('gnn_metamf.cli.evaluate.load_dataset', missing)
    code, _, err = cli(capsys, 'evaluate', '--checkpoint', checkpoint,
                       '--dataset', 'ml-100k')
    assert_user_error(code, err, "dataset 'ml-100k' is missing u1.base")


def test_cli_corrupt_checkpoint(capsys, tmp_path, observed):
    garbage = tmp_path / 'garbage.pt'
    garbage.write_bytes(b'\x00not a checkpoint\xff' * 10)
    code, _, err = cli(capsys, 'evaluate', '--checkpoint', garbage,
                       '--dataset', 'synthetic')
    assert_user_error(code, err, 'cannot read checkpoint', str(garbage))
    code, _, err = cli(capsys, 'impute', '--checkpoint', garbage,
                       '--observed', observed, *KEYS, '--all-missing',
                       '--output', tmp_path / 'out.csv')
    assert_user_error(code, err, 'cannot read checkpoint')
    assert not (tmp_path / 'out.csv').exists()
    with pytest.raises(CheckpointError):
        main(['evaluate', '--checkpoint', str(garbage), '--dataset',
              'synthetic', '--debug'])


def read_output(path):
    frame = pd.read_csv(path, dtype={'row': str, 'col': str})
    assert list(frame.columns) == ['row', 'col', 'prediction', 'std']
    assert frame['prediction'].map(math.isfinite).all()
    assert (frame['std'] > 0).all()
    return frame


def test_cli_impute_query(capsys, checkpoint, observed, tmp_path):
    query = tmp_path / 'query.csv'
    wanted = pd.DataFrame({'item': ['heat', 'x,y', '01', 'new', 'heat'],
                           'user': ['ann', '007', 'zed', 'bo', 'ann']})
    wanted.to_csv(query, index=False)
    output = tmp_path / 'predictions.csv'
    code, out, err = cli(capsys, 'impute', '--checkpoint', checkpoint,
                         '--observed', observed, '--query', query, *KEYS,
                         '--output', output)
    assert code == 0, err
    assert out == (f'imputed 5 pairs  observed 9 entries in 5 rows x 4 '
                   f'columns  new_rows 1  new_columns 1  output {output}\n')
    frame = read_output(output)
    assert frame['row'].tolist() == wanted['user'].tolist()
    assert frame['col'].tolist() == wanted['item'].tolist()
    assert frame['prediction'][0] == frame['prediction'][4]
    assert frame['prediction'].between(1, 5).all()  # Clipped to observed.


def test_cli_impute_all_missing(capsys, checkpoint, observed, tmp_path):
    output = tmp_path / 'filled.csv'
    code, out, err = cli(capsys, 'impute', '--checkpoint', checkpoint,
                         '--observed', observed, *KEYS, '--all-missing',
                         '--output', output)
    assert code == 0, err
    frame = read_output(output)
    assert len(frame) == 5 * 4 - 9
    given = pd.read_csv(observed, dtype=str)
    seen = set(zip(given['user'], given['item']))
    pairs = set(zip(frame['row'], frame['col']))
    assert len(pairs) == 11 and not pairs & seen
    assert pairs | seen == {(r, c) for r in ROWS for c in COLS}


def test_cli_impute_tsv_and_max_pairs(capsys, checkpoint, tmp_path):
    observed = tmp_path / 'observed.tsv'
    observed.write_text('row\tcol\tvalue\na\tx\t1\nb\ty\t4\nb\tx\t2\n')
    output = tmp_path / 'out.csv'
    code, _, err = cli(capsys, 'impute', '--checkpoint', checkpoint,
                       '--observed', observed, '--all-missing', '--output',
                       output, '--max-pairs', 1)
    assert code == 0, err
    assert read_output(output)[['row', 'col']].values.tolist() == [
        ['a', 'y']]
    code, _, err = cli(capsys, 'impute', '--checkpoint', checkpoint,
                       '--observed', observed, '--all-missing', '--output',
                       tmp_path / 'other.csv', '--sep', ',')
    assert_user_error(code, err, "its columns are ['row\\tcol\\tvalue']")


def test_cli_impute_never_overwrites_inputs(capsys, checkpoint, observed,
                                            tmp_path):
    before = observed.read_bytes()
    for extra in ([], ['--force']):
        code, _, err = cli(capsys, 'impute', '--checkpoint', checkpoint,
                           '--observed', observed, *KEYS, '--all-missing',
                           '--output', observed, *extra)
        assert_user_error(code, err, 'is the --observed file')
        assert observed.read_bytes() == before
    # The same file under another spelling.
    other = tmp_path / '.' / 'sub' / '..' / observed.name
    (tmp_path / 'sub').mkdir()
    code, _, err = cli(capsys, 'impute', '--checkpoint', checkpoint,
                       '--observed', observed, *KEYS, '--query', observed,
                       '--output', other, '--force')
    assert_user_error(code, err, 'is the --observed file')
    assert observed.read_bytes() == before


def test_cli_impute_existing_output_needs_force(capsys, checkpoint,
                                                observed, tmp_path):
    output = tmp_path / 'out.csv'
    output.write_text('precious\n')
    args = ['impute', '--checkpoint', checkpoint, '--observed', observed,
            *KEYS, '--all-missing', '--output', output]
    code, _, err = cli(capsys, *args)
    assert_user_error(code, err, 'already exists', '--force')
    assert output.read_text() == 'precious\n'
    code, _, err = cli(capsys, *args, '--force')
    assert code == 0, err
    assert len(read_output(output)) == 11
    assert not [p for p in tmp_path.iterdir() if p.suffix == '.tmp']


def test_cli_impute_missing_column(capsys, checkpoint, observed, tmp_path):
    code, _, err = cli(capsys, 'impute', '--checkpoint', checkpoint,
                       '--observed', observed, '--all-missing', '--output',
                       tmp_path / 'out.csv')
    assert_user_error(code, err, "no column(s) ['row', 'col', 'value']",
                      "its columns are ['user', 'item', 'stars']")


def test_cli_impute_duplicates(capsys, checkpoint, tmp_path):
    observed = tmp_path / 'observed.csv'
    observed.write_text('row,col,value\na,x,1\na,x,3\nb,y,5\n')
    args = ['impute', '--checkpoint', checkpoint, '--observed', observed,
            '--all-missing', '--output', tmp_path / 'out.csv']
    code, _, err = cli(capsys, *args)
    assert_user_error(code, err, "(row 'a', col 'x')", '--duplicates mean')
    code, out, err = cli(capsys, *args, '--duplicates', 'mean')
    assert code == 0, err
    assert 'observed 2 entries' in out


@pytest.mark.parametrize('text, needle', [
    ('row,col,value\na,x,1\nb,y,five\n',
     "'value' must hold finite numbers, got 'five' in data row 2"),
    ('row,col,value\na,,1\n', "empty 'col' cell in data row 1"),
    ('row,col,value\n', 'holds no entries'),
    ('', 'not a readable table'),
])
def test_cli_impute_bad_observed(capsys, checkpoint, tmp_path, text, needle):
    observed = tmp_path / 'observed.csv'
    observed.write_text(text)
    code, _, err = cli(capsys, 'impute', '--checkpoint', checkpoint,
                       '--observed', observed, '--all-missing', '--output',
                       tmp_path / 'out.csv')
    assert_user_error(code, err, needle)


def test_cli_impute_missing_file(capsys, checkpoint, tmp_path):
    code, _, err = cli(capsys, 'impute', '--checkpoint', checkpoint,
                       '--observed', tmp_path / 'absent.csv',
                       '--all-missing', '--output', tmp_path / 'out.csv')
    assert_user_error(code, err, 'absent.csv: no such file')
