import pathlib

import pytest
import torch

from gnn_metamf.checkpoint import (
    FORMAT,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from gnn_metamf.nn import MetaMF


def test_checkpoint_round_trip(tmp_path):
    payload = {'weights': torch.arange(3.0), 'meta': {'step': 4, 'xs': [1]}}
    path = save_checkpoint(payload, tmp_path / 'run' / 'ckpt.pt')
    loaded = load_checkpoint(path)
    assert loaded['format'] == FORMAT and loaded['meta'] == payload['meta']
    assert torch.equal(loaded['weights'], payload['weights'])
    assert [p.name for p in path.parent.iterdir()] == ['ckpt.pt']


def test_checkpoint_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    path = save_checkpoint({'step': 1}, tmp_path / 'ckpt.pt')
    before = path.read_bytes()

    def crash(obj, handle, *args, **kwargs):
        handle.write(b'half a checkpoint')
        raise KeyboardInterrupt  # A crash in the middle of writing.

    monkeypatch.setattr(torch, 'save', crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({'step': 2}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ['ckpt.pt']


class _Payload:
    r"""An object whose unpickling would create a file: what a malicious
    checkpoint does to run code."""
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def test_checkpoint_load_refuses_code(tmp_path):
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.pt'
    torch.save({'format': FORMAT, 'version': 1, 'x': _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match='cannot read checkpoint'):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize('content,match', [
    (b'', 'cannot read checkpoint'),
    (b'garbage' * 10, 'cannot read checkpoint'),
])
def test_checkpoint_corrupt_file(tmp_path, content, match):
    path = tmp_path / 'bad.pt'
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)


def test_checkpoint_truncated_file(tmp_path):
    path = save_checkpoint({'w': torch.randn(1000)}, tmp_path / 'ckpt.pt')
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(CheckpointError, match='corrupt, truncated'):
        load_checkpoint(path)


def test_checkpoint_incompatible(tmp_path):
    path = tmp_path / 'other.pt'
    torch.save({'state_dict': {}}, path)
    with pytest.raises(CheckpointError, match="format None, expected "
                                              f"'{FORMAT}'"):
        load_checkpoint(path)
    save_checkpoint({}, path)
    payload = torch.load(path, weights_only=True)
    payload['version'] = 99
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match='version 99'):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match='no checkpoint at'):
        load_checkpoint(tmp_path / 'missing.pt')


def test_checkpoint_model_save_load(tmp_path):
    torch.manual_seed(0)
    model = MetaMF(rank=3, hidden_channels=8, num_layers=2, layer='node')
    path = model.save(tmp_path / 'model.pt', note='hello')
    loaded = MetaMF.load(path)
    assert loaded.config == model.config and not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])
    # A model checkpoint with a mismatched configuration is refused.
    payload = load_checkpoint(path)
    payload['model_config']['rank'] = 5
    save_checkpoint({k: v for k, v in payload.items()
                     if k not in ('format', 'version')}, path)
    with pytest.raises(CheckpointError, match='no compatible MetaMF'):
        MetaMF.load(path)


def test_checkpoint_model_with_unregistered_layer_is_not_saved(tmp_path):
    from gnn_metamf.nn import ExchangeableLayer
    model = MetaMF(rank=2, hidden_channels=4, num_layers=1,
                   layer=ExchangeableLayer)
    with pytest.raises(ValueError, match='registered layer names'):
        model.save(tmp_path / 'model.pt')
    assert not (tmp_path / 'model.pt').exists()
