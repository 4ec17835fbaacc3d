"""Douban, Flixster and Yahoo! Music: the 3,000 x 3,000 subsets of Monti et
al., "Geometric Matrix Completion with Recurrent Multi-Graph Neural
Networks" (NeurIPS 2017), as shipped by the IGMC repository.

Each ``training_test_dataset.mat`` is a MATLAB 7.3 file, that is HDF5, read
with ``h5py``. It holds the rating matrix ``M`` (users x items) and two 0/1
masks of the same shape, ``Otraining`` and ``Otest``: the split on which
published results are reported. MATLAB writes arrays column-major, so HDF5
shows a dense array transposed; it is transposed back here, as IGMC and
PyG's ``IGMCDataset`` do. (Both axes have length 3,000, so the shape cannot
tell the orientation.) MATLAB sparse arrays, stored as a group of ``data``,
``ir`` and ``jc``, are read too.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from . import root as _root
from .root import RawDataset, Source

__all__ = ['DOUBAN', 'FLIXSTER', 'YAHOO_MUSIC']

FILE = 'training_test_dataset.mat'
IGMC_URL = ('https://raw.githubusercontent.com/muhanzhang/IGMC/master/'
            'raw_data/{name}/' + FILE)

#: Shape (users, items) of every subset.
SHAPE = (3000, 3000)


def read_mat(path: Path, key: str) -> np.ndarray:
    r"""The MATLAB array ``key`` of a v7.3 ``.mat`` file, dense, in MATLAB's
    orientation, as float64."""
    import h5py

    with h5py.File(path, 'r') as f:
        if key not in f:
            raise KeyError(f"'{path}' has no array {key!r}; it has "
                           f"{sorted(f.keys())}")
        node = f[key]
        if isinstance(node, h5py.Group):  # MATLAB sparse, column-major.
            return _sparse_to_dense(node, path, key)
        return np.asarray(node, dtype=np.float64).T


def _sparse_to_dense(group, path: Path, key: str) -> np.ndarray:
    if 'jc' not in group or 'ir' not in group:
        raise ValueError(f"array {key!r} of '{path}' is a group without "
                         f"'ir' and 'jc', expected a dense or sparse array")
    jc = np.asarray(group['jc'], dtype=np.int64)
    ir = np.asarray(group['ir'], dtype=np.int64)
    # Logical sparse arrays may omit 'data': every stored entry is 1.
    data = (np.asarray(group['data'], dtype=np.float64) if 'data' in group
            else np.ones(len(ir)))
    num_rows = int(group.attrs.get('MATLAB_sparse', ir.max(initial=-1) + 1))
    out = np.zeros((num_rows, len(jc) - 1))
    col = np.repeat(np.arange(len(jc) - 1), np.diff(jc))
    out[ir, col] = data
    return out


def _process(paths: dict, split: str) -> dict:
    path = paths[FILE]
    ratings, train, test = (read_mat(path, key)
                            for key in ('M', 'Otraining', 'Otest'))
    for key, array in (('M', ratings), ('Otraining', train),
                       ('Otest', test)):
        if array.shape != SHAPE:
            raise ValueError(f"array {key!r} of '{path}' has shape "
                             f"{array.shape}, expected {SHAPE} (users, "
                             f"items)")
    train, test = train != 0, test != 0
    overlap = int((train & test).sum())
    if overlap:
        raise ValueError(f"'Otraining' and 'Otest' of '{path}' share "
                         f"{overlap} entries, expected disjoint masks")
    if split == 'all':
        train, test = train | test, None

    out = _entries(ratings, train, 'edge_index', 'edge_value')
    if test is not None:
        out.update(_entries(ratings, test, 'edge_label_index', 'edge_label'))
    out['num_rows'], out['num_cols'] = SHAPE
    return out


def _entries(ratings: np.ndarray, mask: np.ndarray, index_key: str,
             value_key: str) -> dict:
    row, col = np.nonzero(mask)  # In (user, item) order.
    index = torch.from_numpy(np.stack([row, col]).astype(np.int64))
    value = torch.from_numpy(ratings[row, col]).float()
    return {index_key: index, value_key: value}


def _spec(name: str, sha256: str | None) -> RawDataset:
    url = IGMC_URL.format(name=name)

    def fetch(target: Path) -> None:
        path = _root.download_url(url, target / FILE)
        try:
            _root.check_sha256(path, sha256, url)
        except _root.ChecksumError:
            path.unlink(missing_ok=True)
            raise

    return RawDataset(
        name=name,
        checksums={FILE: sha256},
        splits={'standard': (FILE,), 'all': (FILE,)},
        default_split='standard',
        sources=(Source(f'IGMC repository raw_data/{name}', url, fetch),),
        process=_process,
    )


DOUBAN = _spec(
    'douban',
    '1f4476321cbfe0f606e7e35d0695ca15447a1b0b2c811df130109b6cb9a067ae')
YAHOO_MUSIC = _spec(
    'yahoo_music',
    '56a80de836537544d0d6ba36fc59937dfe87f738ac5e2a701cc8226faf4f31ec')
FLIXSTER = _spec('flixster', None)  # Not checked: no sha256 is on record.
