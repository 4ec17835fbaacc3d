r"""Benchmark protocols: the meta-learned model, its two ablations and the
per-matrix baselines, scored on exactly the same matrices and entries.

Three model variants are meta-trained with
:class:`~gnn_metamf.train.Trainer` (see :data:`VARIANTS`): ``'full'`` (the
default :class:`~gnn_metamf.config.ModelConfig`), ``'prior_only'`` (no
refinement step: the encoder's prior means are the factors) and
``'no_encoder'`` (a fixed, meta-learned prior refined by the MAP steps).

* **Protocol A, few-shot imputation of unseen matrices.** Test tasks are
  sub-matrices of a dataset's meta-test part (rows *and* columns that
  meta-training never saw), drawn with the task sizes of the training
  configuration and the seed ``TEST_SEED + seed``, at several support
  settings (:data:`SUPPORTS`). Each method imputes the query entries of
  every task from its support entries only.
* **Protocol B, transfer.** A model meta-trained on one dataset imputes the
  standard test entries of another from that dataset's standard training
  entries (:func:`~gnn_metamf.evaluate.evaluate_split`), in its original
  scale; baselines are fitted on the same training entries.
* **Protocol C, one large matrix.** Models meta-trained on MovieLens 100K
  ``u1.base`` (which never contains a ``u1.test`` entry) impute
  ``u1.test`` from all of ``u1.base``.

Every function is silent and returns rows of plain dictionaries; progress
goes to the ``logging`` logger ``gnn_metamf.protocols`` (the loggers of
its modules are its children). :func:`run_benchmark` runs a
:class:`BenchmarkPlan` end to end, trains or reuses the runs under
``<out>/runs/<name>/``, writes tables, CSV and JSON files and plots into
``<out>/``, and checks the targets (:func:`check_targets`).

Example:

.. code-block:: python

    plan = BenchmarkPlan(protocols=('A',), steps=1200, num_tasks=200)
    summary = run_benchmark(plan, 'results', jobs=2)
    summary['targets']  # [{'target': ..., 'status': 'met', ...}, ...]

Modules: :mod:`.plan` (variants, settings, targets, :class:`BenchmarkPlan`),
:mod:`.runs` (meta-training runs), :mod:`.tasks` (protocol A tasks and
scores), :mod:`.runner` (:func:`run_benchmark` and its process pool),
:mod:`.report` (targets, tables, plots) and :mod:`.io` (environment, JSON
and CSV files).
"""
from .io import environment
from .plan import (
    PROTOCOLS,
    PUBLISHED,
    SUPPORTS,
    VARIANTS,
    BenchmarkPlan,
    RunSpec,
    available_baselines,
)
from .report import check_targets, markdown_table, write_reports
from .runner import run_benchmark
from .runs import train_run
from .tasks import (
    few_shot_tasks,
    paired_differences,
    score_tasks,
    task_statistics,
    tasks_fingerprint,
)

__all__ = [
    'VARIANTS', 'SUPPORTS', 'PUBLISHED', 'PROTOCOLS', 'RunSpec',
    'BenchmarkPlan', 'available_baselines', 'train_run', 'few_shot_tasks',
    'task_statistics', 'tasks_fingerprint', 'score_tasks',
    'paired_differences', 'check_targets', 'markdown_table',
    'run_benchmark', 'write_reports', 'environment',
]
