"""The training loop every backend shares, and what a backend implements.

* :class:`StepDriver` (:mod:`fulmen.train.driver`): tasks, episodes, records, credit, batches,
  metrics, checkpoint bookkeeping, alarms and evaluation, step after step.
* :class:`Policy` (:mod:`fulmen.train.policy`): the backend's part: serve the current version,
  ``update(rows) -> metrics``, ``publish(version)``, ``save``/``load``, ``close``.
* :mod:`fulmen.train.schema`: the metric key names every run writes (one schema for every
  backend; the watcher, dashboard and alarms read only these).

Nothing here imports a machine-learning framework.
"""

from __future__ import annotations

from fulmen.train.checkpoints import Checkpoint, latest_checkpoint, write_checkpoint
from fulmen.train.driver import StepDriver, TrainResult
from fulmen.train.evaluation import EvalResult, evaluate_tasks, evaluate_upstream, load_eval_tasks
from fulmen.train.metrics_log import TRACKERS, MetricsWriter, read_metrics
from fulmen.train.policy import Policy
from fulmen.train.rollouts import (
    EpisodeRunner,
    GreedySampling,
    RolloutSampling,
    RunnerFactory,
    make_runner,
    stable_seed,
)
from fulmen.train.sampler import TaskSampler

__all__ = [
    "TRACKERS",
    "Checkpoint",
    "EpisodeRunner",
    "EvalResult",
    "GreedySampling",
    "MetricsWriter",
    "Policy",
    "RolloutSampling",
    "RunnerFactory",
    "StepDriver",
    "TaskSampler",
    "TrainResult",
    "evaluate_tasks",
    "evaluate_upstream",
    "latest_checkpoint",
    "load_eval_tasks",
    "make_runner",
    "read_metrics",
    "stable_seed",
    "write_checkpoint",
]
