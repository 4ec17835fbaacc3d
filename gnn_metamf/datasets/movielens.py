"""MovieLens 100K and 1M (GroupLens), as rating files of one line per rating.

Users are rows and movies columns; a GroupLens id ``k`` becomes id ``k - 1``,
so ids index GroupLens' own ``u.item`` / ``movies.dat`` directly. MovieLens
1M has movie ids up to 3,952 of which 3,706 were rated: its matrix has 3,952
columns, 246 of them empty, rather than re-indexed ones.

When GroupLens cannot be reached, MovieLens 100K is rebuilt from the RecBole
1.2.1 wheel on the Python package index, which carries ``u.data`` (all
100,000 ratings, in the same order, under a header line) as
``recbole/dataset_example/ml-100k/ml-100k.inter``. The split ``u1`` is then
derived as GroupLens made it: ``u1.test`` holds the first 20,000 lines of
``u.data`` and ``u1.base`` the other 80,000, each sorted by user and movie.
Every rebuilt file is checked against GroupLens' sha256.
"""
from __future__ import annotations

import io
import logging
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import root as _root
from .root import RawDataset, Source

__all__ = ['ML_100K', 'ML_1M']

log = logging.getLogger(__name__)

ML_100K_URL = 'https://files.grouplens.org/datasets/movielens/ml-100k.zip'
ML_1M_URL = 'https://files.grouplens.org/datasets/movielens/ml-1m.zip'

ML_100K_SHA256 = {
    'u.data':
    '06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490',
    'u1.base':
    'ce253ec86c448b44fb3ba9a30d12dcfc2e9210cbde71efada3730c22e9ac212a',
    'u1.test':
    '18c6014a4b2c7324f250a63f8904a7b16b2b19f911129e346141507b0cbac950',
}

RECBOLE_REQUIREMENT = 'recbole==1.2.1'
RECBOLE_MEMBER = 'recbole/dataset_example/ml-100k/ml-100k.inter'
RECBOLE_HEADER = (b'user_id:token\titem_id:token\trating:float\t'
                  b'timestamp:float')
RECBOLE_URL = 'https://pypi.org/project/recbole/1.2.1/'
PIP_TIMEOUT = 300  # Seconds; the wheel is about 2 MB.

U1_TEST_LINES = 20_000


# ----------------------------------------------------------------------
# Reading.

def _read_ratings(path: Path, sep: bytes) -> np.ndarray:
    r"""The ``user item rating timestamp`` lines of ``path`` as an int64
    array of shape ``(N, 4)``."""
    data = Path(path).read_bytes()
    if sep != b'\t':
        data = data.replace(sep, b'\t')
    try:
        frame = pd.read_csv(io.BytesIO(data), sep='\t', header=None,
                            dtype=np.int64, engine='c')
    except (ValueError, pd.errors.ParserError) as error:
        raise ValueError(f"cannot read '{path}' as lines of 'user{sep!r}item"
                         f"{sep!r}rating{sep!r}timestamp' integers: "
                         f"{error}") from error
    array = frame.to_numpy()
    if array.shape[1] != 4:
        raise ValueError(f"'{path}' has {array.shape[1]} columns, expected 4 "
                         f"(user, item, rating, timestamp)")
    if len(array) and array[:, :2].min() < 1:
        raise ValueError(f"'{path}' has id {array[:, :2].min()}, expected "
                         f"GroupLens' 1-based ids")
    return array


def _tensors(train: np.ndarray, test: np.ndarray | None = None) -> dict:
    parts = [train] if test is None else [train, test]
    num_rows = int(max(int(p[:, 0].max(initial=0)) for p in parts))
    num_cols = int(max(int(p[:, 1].max(initial=0)) for p in parts))
    out = {
        'edge_index': torch.from_numpy(train[:, :2].T - 1).contiguous(),
        'edge_value': torch.from_numpy(train[:, 2]).float(),
        'num_rows': num_rows,
        'num_cols': num_cols,
    }
    if test is not None:
        out['edge_label_index'] = torch.from_numpy(
            test[:, :2].T - 1).contiguous()
        out['edge_label'] = torch.from_numpy(test[:, 2]).float()
    return out


def _process_ml_100k(paths: dict, split: str) -> dict:
    if split == 'all':
        return _tensors(_read_ratings(paths['u.data'], b'\t'))
    return _tensors(_read_ratings(paths['u1.base'], b'\t'),
                    _read_ratings(paths['u1.test'], b'\t'))


def _process_ml_1m(paths: dict, split: str) -> dict:
    return _tensors(_read_ratings(paths['ratings.dat'], b'::'))


# ----------------------------------------------------------------------
# Fetching.

def _fetch_grouplens_zip(url: str, members: dict, checksums: dict,
                         target: Path) -> None:
    r"""Downloads a GroupLens zip and writes ``members`` (zip member ->
    file name) into ``target``, each checked against ``checksums``."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = _root.download_url(url, Path(tmp) / Path(url).name)
        with zipfile.ZipFile(archive) as zf:
            contents = {name: zf.read(member)
                        for member, name in members.items()}
    for name, data in contents.items():
        _root.check_bytes(data, checksums.get(name), f'{name} in {url}')
    for name, data in contents.items():
        _root.write_atomic(target / name, data)


def _fetch_ml_100k_grouplens(target: Path) -> None:
    members = {f'ml-100k/{name}': name for name in ML_100K_SHA256}
    _fetch_grouplens_zip(ML_100K_URL, members, ML_100K_SHA256, target)


def _fetch_ml_1m_grouplens(target: Path) -> None:
    _fetch_grouplens_zip(ML_1M_URL, {'ml-1m/ratings.dat': 'ratings.dat'},
                         {}, target)


def download_recbole_wheel(folder: Path) -> Path:
    r"""Downloads the RecBole 1.2.1 wheel (no dependencies) into ``folder``
    with pip and returns its path.

    Raises:
        OSError: When pip fails, for example without network.
    """
    command = [sys.executable, '-m', 'pip', 'download', RECBOLE_REQUIREMENT,
               '--no-deps', '--only-binary=:all:', '--no-input',
               '--disable-pip-version-check', '-d', str(folder)]
    try:
        result = subprocess.run(command, capture_output=True, text=True,
                                timeout=PIP_TIMEOUT, check=False)
    except subprocess.TimeoutExpired as error:
        raise OSError(f'pip download {RECBOLE_REQUIREMENT} took more than '
                      f'{PIP_TIMEOUT} s') from error
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip()[-500:]
        raise OSError(f'pip download {RECBOLE_REQUIREMENT} failed with exit '
                      f'status {result.returncode}: {tail}')
    wheels = sorted(Path(folder).glob('recbole-1.2.1-*.whl'))
    if not wheels:
        raise OSError(f'pip download {RECBOLE_REQUIREMENT} left no wheel in '
                      f"'{folder}'")
    return wheels[0]


def ml_100k_from_recbole(wheel: Path) -> dict:
    r"""Rebuilds ``u.data``, ``u1.base`` and ``u1.test`` from the RecBole
    wheel; returns their contents by name, each checked against GroupLens'
    sha256.

    Raises:
        ChecksumError: When a rebuilt file differs from GroupLens' one.
        ValueError: When the wheel does not hold the expected file.
    """
    with zipfile.ZipFile(wheel) as zf:
        try:
            inter = zf.read(RECBOLE_MEMBER)
        except KeyError as error:
            raise ValueError(f"'{wheel}' has no {RECBOLE_MEMBER}") from error
    header, _, u_data = inter.partition(b'\n')
    if header.rstrip(b'\r') != RECBOLE_HEADER:
        raise ValueError(f'{RECBOLE_MEMBER} starts with {header[:80]!r}, '
                         f'expected {RECBOLE_HEADER!r}')
    _root.check_bytes(u_data, ML_100K_SHA256['u.data'],
                      f'u.data rebuilt from {wheel.name}')

    lines = u_data.splitlines(keepends=True)
    test = b''.join(sorted(lines[:U1_TEST_LINES], key=_user_item))
    base = b''.join(sorted(lines[U1_TEST_LINES:], key=_user_item))
    files = {'u.data': u_data, 'u1.base': base, 'u1.test': test}
    for name, data in files.items():
        _root.check_bytes(data, ML_100K_SHA256[name],
                          f'{name} derived from {wheel.name}')
    return files


def _user_item(line: bytes) -> tuple:
    user, item, _ = line.split(b'\t', 2)
    return int(user), int(item)


def _fetch_ml_100k_recbole(target: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        files = ml_100k_from_recbole(download_recbole_wheel(Path(tmp)))
    for name, data in files.items():
        _root.write_atomic(target / name, data)
    log.info('rebuilt MovieLens 100K (%s) from the RecBole 1.2.1 wheel into '
             '%s', ', '.join(files), target)


ML_100K = RawDataset(
    name='ml-100k',
    checksums=ML_100K_SHA256,
    splits={'u1': ('u1.base', 'u1.test'), 'all': ('u.data',)},
    default_split='u1',
    sources=(
        Source('GroupLens ml-100k.zip', ML_100K_URL,
               _fetch_ml_100k_grouplens),
        Source('RecBole 1.2.1 wheel (pip download recbole==1.2.1)',
               RECBOLE_URL, _fetch_ml_100k_recbole),
    ),
    process=_process_ml_100k,
)

ML_1M = RawDataset(
    name='ml-1m',
    checksums={'ratings.dat': None},  # GroupLens publishes none.
    splits={'all': ('ratings.dat',)},
    default_split='all',
    sources=(Source('GroupLens ml-1m.zip', ML_1M_URL,
                    _fetch_ml_1m_grouplens),),
    process=_process_ml_1m,
)
