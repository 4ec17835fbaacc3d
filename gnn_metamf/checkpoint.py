"""Checkpoints: atomic writes and safe loads.

A checkpoint is a dictionary of tensors and plain Python values written
with :func:`torch.save` to a temporary file beside the target, flushed to
disk, then renamed over it, so a crash never leaves a half-written file and
never destroys the previous checkpoint. Loading uses
``torch.load(..., weights_only=True)``: an untrusted file cannot run code.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Union

import torch

__all__ = ['CheckpointError', 'save_checkpoint', 'load_checkpoint',
           'FORMAT', 'VERSION']

FORMAT = 'gnn-metamf-checkpoint'
VERSION = 1

PathLike = Union[str, os.PathLike]


class CheckpointError(ValueError):
    r"""A checkpoint file is missing, corrupt or incompatible."""


def save_checkpoint(payload: dict[str, Any], path: PathLike) -> Path:
    r"""Writes ``payload`` (tensors and plain values) to ``path``
    atomically, adding the format name and version."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {'format': FORMAT, 'version': VERSION, **payload}
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp',
                               dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: PathLike,
                    map_location: Any = 'cpu') -> dict[str, Any]:
    r"""Reads a checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: If the file does not exist, cannot be read safely
            (corrupt, truncated, or holding arbitrary Python objects), or
            was written by another program or an incompatible version.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'no checkpoint at {path}')
    try:
        payload = torch.load(path, map_location=map_location,
                             weights_only=True)
    except Exception as error:  # Pickle, zip and unpickler errors alike.
        raise CheckpointError(
            f'cannot read checkpoint {path}: it is corrupt, truncated or not '
            f'a gnn-metamf checkpoint ({type(error).__name__}: '
            f'{str(error).splitlines()[0] if str(error) else ""})') from error
    if not isinstance(payload, dict) or payload.get('format') != FORMAT:
        found = payload.get('format') if isinstance(payload, dict) else \
            type(payload).__name__
        raise CheckpointError(f'{path} is not a gnn-metamf checkpoint '
                              f'(format {found!r}, expected {FORMAT!r})')
    if payload.get('version') != VERSION:
        raise CheckpointError(f'{path} has checkpoint version '
                              f'{payload.get("version")!r}; this gnn-metamf '
                              f'reads version {VERSION}')
    return payload
