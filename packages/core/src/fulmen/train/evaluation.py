"""Held-out evaluation: every eval task once, greedy, scored by its outcome reward.

The step driver evaluates at its cadence (:mod:`fulmen.train.driver`); ``fulmen eval`` runs
:func:`evaluate_upstream` against whatever a backend serves.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fulmen.config import ConfigError, TrainConfig
from fulmen.gateway import Gateway
from fulmen.loading import load_object, load_tasks
from fulmen.policies import PolicyRoutes
from fulmen.protocol import Task
from fulmen.runner import EpisodeResult
from fulmen.store import open_store
from fulmen.train.rollouts import EpisodeRunner, GreedySampling, make_runner

__all__ = ["EvalResult", "evaluate_tasks", "evaluate_upstream", "load_eval_tasks"]


@dataclass(frozen=True, slots=True)
class EvalResult:
    """Greedy evaluation on held-out tasks."""

    success_rate: float
    """Fraction of tasks whose outcome reward is positive (failed episodes count as misses)."""
    reward_mean: float
    episodes: int
    failed: int

    def row(self) -> dict[str, Any]:
        """The eval row of ``metrics.jsonl`` (:data:`fulmen.train.schema.EVAL_KEYS`)."""
        return {
            "success_rate": self.success_rate,
            "reward_mean": self.reward_mean,
            "episodes": self.episodes,
            "failed_episodes": self.failed,
        }


def load_eval_tasks(config: TrainConfig) -> list[Task]:
    """The config's eval split, cut to ``[train] eval_size`` (empty when there is none)."""
    if not config.data.eval:
        return []
    tasks = load_tasks(config.data.eval, split="eval", base_dir=config.base_dir)
    size = config.train.eval_size
    return tasks if size is None else tasks[:size]


def _outcome(result: EpisodeResult) -> float:
    return result.outcome if result.ok and result.outcome is not None else 0.0


async def evaluate_tasks(runner: EpisodeRunner, agent: Any, tasks: list[Task], *, seed: int) -> EvalResult:
    """Run every task once with greedy decoding and score it."""
    results = await runner.arun(
        agent, tasks, group_size=1, description="eval", episode_metadata=GreedySampling(seed)
    )
    outcomes = [_outcome(r) for r in results]
    return EvalResult(
        success_rate=sum(o > 0 for o in outcomes) / len(outcomes),
        reward_mean=sum(outcomes) / len(outcomes),
        episodes=len(results),
        failed=sum(not r.ok for r in results),
    )


async def evaluate_upstream(config: TrainConfig, upstream_url: str) -> EvalResult:
    """Evaluate the config's eval split against the model served at ``upstream_url``.

    Episodes are recorded in a temporary store (evaluation never touches a run's store).

    Raises:
        ConfigError: ``[data] eval`` is not set.
    """
    tasks = load_eval_tasks(config)
    if not tasks:
        raise ConfigError("[data] eval is not set; nothing to evaluate")
    agent = load_object(config.agent.entry, base_dir=config.base_dir)
    with tempfile.TemporaryDirectory(prefix="fulmen-eval-") as tmp:
        store = open_store(Path(tmp) / "eval.db")
        routes = PolicyRoutes.of(config.policies, base=config.model.name) if config.policies else None
        gateway = Gateway(store, upstream_url, routes=routes)
        gateway.start_in_thread()
        try:
            return await evaluate_tasks(make_runner(config, gateway), agent, tasks, seed=config.run.seed)
        finally:
            gateway.stop_thread()
            store.close()
