r"""The plan of a benchmark: the protocols, model variants, support settings,
published numbers and target thresholds, the meta-training runs
(:class:`RunSpec`) and :class:`BenchmarkPlan`."""
from __future__ import annotations

import importlib.util
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from ..baselines import BASELINES
from ..config import ModelConfig, TaskConfig, TrainConfig

PROTOCOLS = ('A', 'B', 'C')

#: ModelConfig fields that make each variant; the rest are the defaults.
VARIANTS: dict[str, dict[str, Any]] = {
    'full': {},
    'prior_only': {'num_steps': 0},
    'no_encoder': {'prior': 'fixed'},
}

#: TaskSampler arguments of each support setting of protocol A.
SUPPORTS: dict[str, dict[str, Any]] = {
    '10%': {'support_fraction': 0.1},
    '30%': {'support_fraction': 0.3},
    '50%': {'support_fraction': 0.5},
    '3/row': {'support_per_row': 3},
}

#: Published test RMSEs, printed beside ours: ``(protocol, target)`` to a
#: list of ``(method, rmse)``. IGMC: Zhang and Chen, ICLR 2020; GC-MC: van
#: den Berg et al. 2017; GLocal-K: Han et al., CIKM 2021.
PUBLISHED: dict[tuple[str, str], list[tuple[str, float]]] = {
    ('B', 'douban:standard'): [('IGMC, transferred from ML-100K', 0.759),
                               ('IGMC, in-domain', 0.721)],
    ('B', 'yahoo_music:standard'): [('IGMC, transferred from ML-100K', 20.1),
                                    ('IGMC, in-domain', 19.1)],
    ('B', 'ml-100k:u1'): [('IGMC, in-domain', 0.905),
                          ('GC-MC, in-domain', 0.910)],
    ('C', 'ml-100k:u1'): [('IGMC', 0.905), ('GC-MC', 0.910),
                          ('GLocal-K', 0.889)],
}

#: Protocol B by default: (training datasets, target, variants).
DEFAULT_TRANSFER: tuple[tuple[tuple[str, ...], str, tuple[str, ...]], ...] = (
    (('ml-100k:u1',), 'douban:standard', tuple(VARIANTS)),
    (('ml-100k:u1',), 'yahoo_music:standard', tuple(VARIANTS)),
    (('douban:standard', 'yahoo_music:standard'), 'ml-100k:u1', ('full',)),
)

# Absolute thresholds of the targets (RMSE, original scale).
_TARGETS_B = {'douban:standard': 0.721, 'yahoo_music:standard': 19.1}
_TARGET_C = 0.900
_TARGET_A_MARGIN = 0.03  # full at least 3% below the best baseline at 10%


def available_baselines() -> tuple[str, ...]:
    r"""The per-matrix baselines compared against: ``global_mean``,
    ``biases``, ``mf``, ``soft_impute``, and ``surprise_svd`` when
    scikit-surprise is installed."""
    names = ('global_mean', 'biases', 'mf', 'soft_impute')
    if importlib.util.find_spec('surprise') is not None:
        names += ('surprise_svd',)
    return names


@dataclass(frozen=True)
class RunSpec:
    r"""One meta-training run: the datasets (``'name:split'``) and the
    variant (a key of :data:`VARIANTS`)."""
    datasets: tuple[str, ...]
    variant: str

    @property
    def name(self) -> str:
        r"""Folder name, e.g. ``'ml-100k-u1_full'``."""
        data = '+'.join(d.replace(':', '-') for d in self.datasets)
        return f'{data}_{self.variant}'


@dataclass
class BenchmarkPlan:
    r"""What :func:`run_benchmark` trains and scores.

    Args:
        protocols: Any of ``'A'``, ``'B'``, ``'C'``.
        steps: Meta-training steps of every run.
        seed: Seed of training and of the test tasks (``TEST_SEED + seed``).
        data_root: Data root, else ``$GNN_METAMF_DATA``, else ``datasets/``.
        few_shot: Protocol A datasets; each is scored with the variants
            meta-trained on it.
        transfer: Protocol B entries ``(training datasets, target,
            variants)``.
        large: Protocol C dataset: its variants impute its own test split.
        supports: Protocol A settings, keys of :data:`SUPPORTS`.
        num_tasks: Test tasks per dataset and setting.
        task_baselines: Baselines of protocol A.
        split_baselines: Baselines of protocols B and C.
        refinement_steps: Test-time refinement steps of the steps curves.
        steps_setting: Protocol A setting of the steps curve.
        train_options: Other :class:`TrainConfig` fields, e.g.
            ``val_every``.
        model_options: :class:`ModelConfig` fields shared by the variants.
        task_options: :class:`TaskConfig` fields.
    """
    protocols: tuple[str, ...] = PROTOCOLS
    steps: int = 1200
    seed: int = 0
    data_root: Optional[str] = None
    few_shot: tuple[str, ...] = ('ml-100k:u1', 'douban:standard')
    transfer: tuple = DEFAULT_TRANSFER
    large: str = 'ml-100k:u1'
    supports: tuple[str, ...] = tuple(SUPPORTS)
    num_tasks: int = 200
    task_baselines: tuple[str, ...] = field(
        default_factory=available_baselines)
    split_baselines: tuple[str, ...] = field(
        default_factory=available_baselines)
    refinement_steps: tuple[int, ...] = tuple(range(11))
    steps_setting: str = '30%'
    train_options: dict[str, Any] = field(default_factory=dict)
    model_options: dict[str, Any] = field(default_factory=dict)
    task_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.protocols = tuple(p.upper() for p in self.protocols)
        unknown = sorted(set(self.protocols) - set(PROTOCOLS))
        if unknown:
            raise ValueError(f'unknown protocol(s) {unknown}, expected any '
                             f'of {PROTOCOLS}')
        unknown = sorted(set(self.supports) - set(SUPPORTS))
        if unknown:
            raise ValueError(f'unknown support setting(s) {unknown}, '
                             f'expected any of {list(SUPPORTS)}')
        unknown = sorted(set(self.task_baselines + self.split_baselines)
                         - set(BASELINES))
        if unknown:
            raise ValueError(f'unknown baseline(s) {unknown}, expected any '
                             f'of {sorted(BASELINES)}')
        for _, _, variants in self.transfer:
            if set(variants) - set(VARIANTS):
                raise ValueError(f'unknown variant(s) in {variants}, '
                                 f'expected any of {list(VARIANTS)}')

    def runs(self) -> list[RunSpec]:
        r"""The runs the protocols need, each once, in training order."""
        specs = []
        if 'A' in self.protocols:
            specs += [RunSpec((d,), v) for d in self.few_shot
                      for v in VARIANTS]
        if 'B' in self.protocols:
            specs += [RunSpec(tuple(src), v)
                      for src, _, variants in self.transfer
                      for v in variants]
        if 'C' in self.protocols:
            specs += [RunSpec((self.large,), v) for v in VARIANTS]
        return list(dict.fromkeys(specs))

    def train_config(self, spec: RunSpec) -> TrainConfig:
        r"""The :class:`TrainConfig` of one run."""
        model = ModelConfig(**{**self.model_options,
                               **VARIANTS[spec.variant]})
        return TrainConfig(datasets=tuple(spec.datasets),
                           data_root=self.data_root, steps=self.steps,
                           seed=self.seed, threads=1, model=model,
                           tasks=TaskConfig(**self.task_options),
                           **self.train_options)

    def datasets(self) -> list[tuple[str, str]]:
        r"""Every ``(name, split)`` the plan reads."""
        specs = [d for s in self.runs() for d in s.datasets]
        if 'B' in self.protocols:
            specs += [target for _, target, _ in self.transfer]
        if 'C' in self.protocols:
            specs.append(self.large)
        return [_name_split(s) for s in dict.fromkeys(specs)]

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))


def _name_split(spec: str) -> tuple[str, str]:
    name, _, split = spec.partition(':')
    return name, split or 'all'
