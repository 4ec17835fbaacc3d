import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location(
        'check_environment', ROOT / 'scripts' / 'check_environment.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_environment_yml_matches_pyproject():
    script = _script()
    conda, pip = script.environment_requirements()
    assert any(r.startswith('python') for r in conda)
    assert {script._name(r) for r in pip} == {'torch', 'torch-geometric'}
    assert script.mismatches() == []


def test_environment_check_detects_a_missing_package(tmp_path, monkeypatch):
    script = _script()
    text = ''.join(line for line in (ROOT / 'environment.yml').read_text()
                   .splitlines(keepends=True) if 'h5py' not in line)
    (tmp_path / 'environment.yml').write_text(text)
    original = script.environment_requirements
    monkeypatch.setattr(script, 'environment_requirements',
                        lambda: original(tmp_path / 'environment.yml'))
    assert script.mismatches() == [
        'h5py: in pyproject.toml, missing from environment.yml']
