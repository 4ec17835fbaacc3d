r"""Files the benchmark writes and the machine it ran on:
:func:`environment`, the git commit of the code, ``environment.json``,
and the JSON and CSV helpers."""
from __future__ import annotations

import csv
import importlib.util
import json
import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch


def environment() -> dict[str, Any]:
    r"""The machine and software: cores, platform, Python, torch,
    torch-geometric and NumPy versions, threads, and the git commit of the
    code when it is a checkout."""
    import torch_geometric
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    return {'machine': {
        'cpu_count': os.cpu_count(),
        'cpus_usable': affinity,
        'platform': platform.platform(),
        'processor': platform.processor() or platform.machine(),
        'python': platform.python_version(),
        'torch': torch.__version__,
        'torch_geometric': torch_geometric.__version__,
        'numpy': np.__version__,
        'torch_threads': torch.get_num_threads(),
        'OMP_NUM_THREADS': os.environ.get('OMP_NUM_THREADS'),
        'surprise': importlib.util.find_spec('surprise') is not None,
        'git': _git(),
    }}


def _git() -> Optional[dict[str, Any]]:
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=root,
                                capture_output=True, text=True, check=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(['git', 'status', '--porcelain'], cwd=root,
                               capture_output=True, text=True, check=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {'commit': commit, 'uncommitted_changes': bool(dirty)}


def _append_environment(path: Path, env: dict) -> None:
    # Keep the invocations of earlier protocols run into the same folder.
    old = _read_json(path) or {}
    invocations = old.get('invocations', []) + [env.pop('invocation')]
    _write_json(path, {**env, 'date': _now(), 'invocations': invocations})


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec='seconds')


def _read_json(path: Path) -> Optional[dict]:
    return json.loads(path.read_text()) if path.is_file() else None


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, default=_json_default)
                    + '\n')


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    raise TypeError(f'cannot write {type(value).__name__} as JSON')


def _write_csv(path: Path, rows: Sequence[dict]) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, 'w', newline='') as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
