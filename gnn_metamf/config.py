"""Typed configuration of the model and of meta-training.

The command line exposes the same names (``--rank``, ``--num-steps``, ...);
a run folder holds the resolved configuration as ``config.json``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping, Optional, Union

__all__ = ['ModelConfig', 'TaskConfig', 'TrainConfig']


@dataclass
class ModelConfig:
    r"""Keyword arguments of :class:`~gnn_metamf.nn.MetaMF`."""
    rank: int = 16  # latent dimension K
    hidden_channels: int = 64  # width of encoder and prior heads
    num_layers: int = 4  # encoder layers
    layer: str = 'exchangeable'  # registered name: 'exchangeable', 'node'
    num_steps: int = 3  # MAP refinement steps (0: prior means only)
    solver: str = 'als'  # 'als' (exact per-node solves) or 'gd'
    first_order: bool = False  # first-order meta-gradient
    checkpoint_steps: bool = False  # recompute steps in backward (memory)
    backend: str = 'sparse'  # 'sparse' (CSR products) or 'scatter'
    clip: bool = True  # clip predictions to each matrix's observed range
    prior: str = 'encoder'  # 'encoder', or 'fixed' (ablation: no encoder)


@dataclass
class TaskConfig:
    r"""How meta-training and validation tasks are drawn
    (:class:`~gnn_metamf.data.TaskSampler`)."""
    num_rows: tuple[int, int] = (20, 100)  # rows per task, inclusive range
    num_cols: tuple[int, int] = (20, 100)  # columns per task
    # Share of a task's entries used as support, or a (low, high) range to
    # draw it from per task.
    support_fraction: Union[float, tuple[float, float]] = 0.7
    col_sampling: str = 'degree'  # 'degree' (denser tasks) or 'uniform'


@dataclass
class TrainConfig:
    r"""Meta-training: data, optimisation, validation and early stopping."""
    datasets: tuple[str, ...] = ('ml-100k',)  # names, optionally 'name:split'
    data_root: Optional[str] = None  # else $GNN_METAMF_DATA, else datasets/
    split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    split_seed: int = 0  # seed of the row/column split into parts
    steps: int = 2000  # optimisation steps in all (a resumed run continues)
    batch_size: int = 16  # tasks per step and process
    lr: float = 3e-3  # Adam learning rate
    weight_decay: float = 0.0  # Adam weight decay
    grad_clip: float = 1.0  # max gradient norm (0: no clipping)
    val_every: int = 100  # steps between validations and checkpoints
    val_tasks: int = 64  # fixed validation tasks per dataset
    patience: int = 10  # validations without improvement before stopping
    seed: int = 0  # initialisation and task sampling
    threads: int = 1  # torch threads per process
    model: ModelConfig = field(default_factory=ModelConfig)
    tasks: TaskConfig = field(default_factory=TaskConfig)

    def to_dict(self) -> dict[str, Any]:
        r"""Plain, JSON-ready values."""
        return _plain(asdict(self))

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> TrainConfig:
        r"""Inverse of :meth:`to_dict`; unknown keys raise an error."""
        state = dict(state)
        model = _build(ModelConfig, state.pop('model', {}), 'model')
        tasks = _build(TaskConfig, state.pop('tasks', {}), 'tasks')
        config = _build(cls, state, 'train', model=model, tasks=tasks)
        config.datasets = tuple(config.datasets)
        config.split_fractions = tuple(config.split_fractions)
        tasks.num_rows, tasks.num_cols = (tuple(tasks.num_rows),
                                          tuple(tasks.num_cols))
        if isinstance(tasks.support_fraction, list):
            tasks.support_fraction = tuple(tasks.support_fraction)
        return config


def _build(cls, state: Mapping[str, Any], name: str, **extra):
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(state) - known)
    if unknown:
        raise ValueError(f"unknown {name} configuration key(s) {unknown}; "
                         f"known keys are {sorted(known)}")
    return cls(**state, **extra)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
