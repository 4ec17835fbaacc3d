"""Checks that environment.yml (conda users) matches pyproject.toml.

    python scripts/check_environment.py [--pip-dry-run]

Compares the package names of environment.yml with pyproject.toml's
dependencies and test extra, and with --pip-dry-run asks pip to resolve
environment.yml's pip section against the current environment (there is no
conda on the development machines). Exits 1 on a mismatch.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[1]
# Conda-only entries that pyproject.toml does not list.
CONDA_ONLY = {'python', 'pip'}


def _name(requirement: str) -> str:
    name = re.split(r'[<>=!~ \[;]', requirement.strip(), maxsplit=1)[0]
    return name.lower().replace('_', '-')


def environment_requirements(path: Path = ROOT / 'environment.yml'):
    r"""(conda requirements, pip requirements) of environment.yml."""
    env = yaml.safe_load(path.read_text())
    conda, pip = [], []
    for dep in env.get('dependencies', []):
        if isinstance(dep, dict):
            pip.extend(dep.get('pip', []))
        else:
            conda.append(dep)
    return conda, pip


def project_requirements(path: Path = ROOT / 'pyproject.toml'):
    r"""Requirements of pyproject.toml: core plus the test extra."""
    project = tomllib.loads(path.read_text())['project']
    return (list(project['dependencies']) +
            list(project['optional-dependencies']['test']))


def mismatches() -> list[str]:
    conda, pip = environment_requirements()
    env_names = {_name(r) for r in conda + pip} - CONDA_ONLY
    project_names = {_name(r) for r in project_requirements()}
    out = [f'{n}: in pyproject.toml, missing from environment.yml'
           for n in sorted(project_names - env_names)]
    out += [f'{n}: in environment.yml, missing from pyproject.toml'
            for n in sorted(env_names - project_names)]
    return out


def pip_dry_run() -> int:
    _, pip = environment_requirements()
    cmd = [sys.executable, '-m', 'pip', 'install', '--dry-run', '--quiet',
           *pip]
    print('$', ' '.join(cmd))
    return subprocess.call(cmd)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--pip-dry-run', action='store_true',
                        help="also resolve environment.yml's pip section")
    args = parser.parse_args()
    problems = mismatches()
    for line in problems:
        print('environment.yml:', line)
    if not problems:
        print('environment.yml lists the same packages as pyproject.toml')
    code = 1 if problems else 0
    if args.pip_dry_run:
        code = code or pip_dry_run()
    return code


if __name__ == '__main__':
    sys.exit(main())
