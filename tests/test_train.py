import math

import pytest
import torch

from gnn_metamf.checkpoint import load_checkpoint
from gnn_metamf.config import ModelConfig, TaskConfig, TrainConfig
from gnn_metamf.nn import MetaMF
from gnn_metamf.train import Trainer, load_parts


def tiny_config(**kwargs):
    base = dict(
        datasets=('synthetic',), steps=6, batch_size=4, val_every=2,
        val_tasks=4, patience=100, seed=3,
        model=ModelConfig(rank=4, hidden_channels=8, num_layers=1,
                          num_steps=2),
        tasks=TaskConfig(num_rows=(10, 30), num_cols=(10, 30)))
    return TrainConfig(**{**base, **kwargs})


@pytest.fixture(scope='module')
def parts():
    return load_parts(tiny_config())


def _final(run_dir):
    payload = load_checkpoint(run_dir / 'checkpoint.pt')
    return payload['train_state'], payload['model_state']


def test_train_writes_run_folder_and_learns(tmp_path, parts):
    config = tiny_config(steps=8, val_every=4)
    records = []
    result = Trainer(config, tmp_path, parts).fit(on_validation=records.append)
    assert [r['step'] for r in records] == [4, 8] and result.steps == 8
    for name in ('checkpoint.pt', 'config.json', 'log.csv', 'curves.png'):
        assert (tmp_path / name).is_file(), name
    assert all(math.isfinite(r['val_rmse']) for r in records)
    assert result.best_val_rmse == min(r['val_rmse'] for r in records)
    lines = (tmp_path / 'log.csv').read_text().splitlines()
    assert lines[0].startswith('step,train_loss') and len(lines) == 3
    model = MetaMF.load(tmp_path / 'checkpoint.pt')
    assert not model.training


def test_train_resume_equals_uninterrupted(tmp_path, parts):
    whole, killed = tmp_path / 'whole', tmp_path / 'killed'
    Trainer(tiny_config(), whole, parts).fit()
    # A run stopped after step 4 (its last checkpoint), then resumed.
    Trainer(tiny_config(steps=4), killed, parts).fit()
    resumed = Trainer.resume(killed / 'checkpoint.pt', steps=6, parts=parts)
    assert resumed.step == 4
    resumed.fit()

    (state_a, best_a), (state_b, best_b) = _final(whole), _final(killed)
    assert state_a['step'] == state_b['step'] == 6
    for key, value in state_a['model_state'].items():
        assert torch.equal(value, state_b['model_state'][key]), key
    for key, value in best_a.items():
        assert torch.equal(value, best_b[key]), key
    drop = 'tasks_per_s'
    assert ([{k: v for k, v in h.items() if k != drop}
             for h in state_a['history']] ==
            [{k: v for k, v in h.items() if k != drop}
             for h in state_b['history']])


def test_train_early_stopping_keeps_best(tmp_path, parts, monkeypatch):
    # Scripted validation scores: best at the 2nd validation (step 4), then
    # two worse ones exhaust a patience of 2 at step 8.
    scores = iter([1.0, 0.8, 0.9, 0.95, 0.7])
    seen = {}

    def validate(self):
        seen[self.step] = {k: v.clone()
                           for k, v in self.model.state_dict().items()}
        score = next(scores)
        return {'rmse': score, 'mae': 0.0, 'nll': 0.0, 'score': score}

    monkeypatch.setattr(Trainer, 'validate', validate)
    trainer = Trainer(tiny_config(steps=40, patience=2), tmp_path, parts)
    result = trainer.fit()
    assert result.stopped_early and result.steps == 8
    assert (result.best_step, result.best_val_rmse) == (4, 0.8)
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, seen[4][key]), key
    saved = load_checkpoint(tmp_path / 'checkpoint.pt')['model_state']
    for key, value in saved.items():
        assert torch.equal(value, seen[4][key]), key


def test_train_config_round_trip_and_unknown_keys():
    config = tiny_config()
    assert TrainConfig.from_dict(config.to_dict()) == config
    state = config.to_dict()
    state['model']['depth'] = 3
    with pytest.raises(ValueError, match=r"unknown model configuration "
                                         r"key\(s\) \['depth'\]"):
        TrainConfig.from_dict(state)


def _scaled(parts, factor):
    out = {}
    for name, graph in parts.items():
        graph = graph.clone()
        graph.edge_value = graph.edge_value * factor
        if graph.get('edge_label') is not None:
            graph.edge_label = graph.edge_label * factor
        out[name] = graph
    return out


def test_train_validation_score_ignores_each_dataset_scale(parts):
    r"""With several datasets the best model is chosen by the mean of each
    dataset's RMSE in units of its own spread: rating one dataset 20 times
    larger changes the pooled RMSE but not the score."""
    one = parts['synthetic']
    config = tiny_config(datasets=('a', 'b'))
    scores, pooled = [], []
    for factor in (1.0, 20.0):
        both = {'a': one, 'b': _scaled(one, factor)}
        trainer = Trainer(config, parts=both)
        val = trainer.validate()
        assert val['rmse:b'] == pytest.approx(factor * val['rmse:a'],
                                              rel=1e-4)
        scale = trainer.val_scales
        assert scale['b'] == pytest.approx(factor * scale['a'], rel=1e-6)
        assert val['score'] == pytest.approx(
            (val['rmse:a'] / scale['a'] + val['rmse:b'] / scale['b']) / 2)
        scores.append(val['score'])
        pooled.append(val['rmse'])
    assert scores[1] == pytest.approx(scores[0], rel=1e-4)
    assert pooled[1] > 10 * pooled[0]
    record = Trainer(config, parts={'a': one, 'b': one}).fit().history[-1]
    assert {'val_score', 'val_rmse:a', 'val_rmse:b'} <= set(record)
