"""How the driver runs episodes: a runner with the config's ``[agent]`` limits, and the
sampling each episode gets (rollouts: ``[train] temperature`` with a per-episode seed derived
from the run seed; evaluation: greedy)."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from fulmen.config import TrainConfig
from fulmen.episode_control import EpisodeControl
from fulmen.gateway import Gateway
from fulmen.loading import load_object
from fulmen.protocol import Task
from fulmen.runner import EpisodeMetadataFn, EpisodeResult, Runner

__all__ = [
    "EpisodeRunner",
    "GreedySampling",
    "RolloutSampling",
    "RunnerFactory",
    "make_runner",
    "stable_seed",
]


class EpisodeRunner(Protocol):
    """What the driver runs episodes with: :class:`fulmen.runner.Runner`'s ``arun``, or a
    backend's own (episodes in other processes or machines, e.g. fulmen-verl's Ray actors),
    which reach the same gateway and return the same results."""

    async def arun(
        self,
        agent: Any,
        tasks: Sequence[Task],
        *,
        group_size: int = 1,
        group_prefix: str | None = None,
        description: str = "episodes",
        episode_metadata: EpisodeMetadataFn | None = None,
    ) -> list[EpisodeResult]:
        """Run ``group_size`` episodes of every task through the gateway; results in task
        order, then sample order (see :meth:`fulmen.runner.Runner.arun`)."""
        ...


RunnerFactory = Callable[[TrainConfig, Gateway], EpisodeRunner]
"""How the driver gets its episode runner from the config and the started gateway; the
default is :func:`make_runner`."""


def stable_seed(*parts: object) -> int:
    """A seed that depends only on ``parts`` (not on Python's per-process hash salt)."""
    return zlib.crc32(":".join(map(str, parts)).encode()) & 0x7FFFFFFF


def make_runner(config: TrainConfig, control: EpisodeControl) -> Runner:
    """A runner with the config's ``[agent]`` limits and reward function."""
    reward = config.agent.reward
    return Runner(
        control,
        concurrency=config.agent.concurrency,
        timeout_s=config.agent.timeout_s,
        max_attempts=config.agent.max_attempts,
        reward_fn=load_object(reward, base_dir=config.base_dir) if reward else None,
    )


@dataclass(frozen=True, slots=True)
class RolloutSampling:
    """``episode_metadata`` of a training step: ``temperature``, and a seed per episode slot
    from ``(seed, step_index, task id, sample index)`` (the gateway adds the call's ``seq``),
    so that rollouts are reproducible. ``step_index`` counts from 0. Picklable."""

    temperature: float
    seed: int
    step_index: int

    def __call__(self, task: Task, k: int) -> dict[str, object]:
        """Metadata of slot ``k`` of ``task``."""
        seed = stable_seed(self.seed, self.step_index, task.id, k)
        return {"sampling": {"temperature": self.temperature, "seed": seed}}


@dataclass(frozen=True, slots=True)
class GreedySampling:
    """``episode_metadata`` of an evaluation: greedy decoding (temperature 0), seed ``seed``."""

    seed: int

    def __call__(self, task: Task, k: int) -> dict[str, object]:
        """Metadata of slot ``k`` of ``task``."""
        return {"sampling": {"temperature": 0.0, "seed": self.seed}}
