"""Where the user's agent episodes run: in the trainer process, or in Ray actors.

Either way episodes reach the policy only through fulmen's gateway (HTTP), so they can run on
any machine that reaches it; the gateway records every call into the trainer's store and the
trainer reads the records back by episode id. With ``[verl] ray_runners = N`` the step's
tasks are split over ``N`` Ray actors (placed by Ray anywhere in the cluster, ``num_cpus=1``
each); each runs a :class:`fulmen.runner.Runner` against a
:class:`fulmen.gateway.RemoteGateway`. Agents running outside Ray entirely (other services)
only need ``ctx.base_url`` of their episode, exactly as with the embedded backend.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fulmen.loading import load_object
from fulmen.protocol import Task
from fulmen.runner import Runner

__all__ = [
    "EpisodeSpec",
    "RunnerSpec",
    "SamplingMetadata",
    "run_episodes",
    "run_episodes_ray",
    "stable_seed",
]


def stable_seed(*parts: object) -> int:
    """A seed that depends only on ``parts`` (not on Python's per-process hash salt)."""
    return zlib.crc32(":".join(map(str, parts)).encode()) & 0x7FFFFFFF


@dataclass(frozen=True, slots=True)
class SamplingMetadata:
    """Picklable ``episode_metadata`` callable: per-episode sampling overrides for the gateway
    (``temperature``; a ``seed`` derived from the run seed, step, task and sample index)."""

    temperature: float
    seed: int
    step: int

    def __call__(self, task: Task, k: int) -> dict[str, object]:
        """Metadata of slot ``k`` of ``task``."""
        seed = stable_seed(self.seed, self.step, task.id, k)
        return {"sampling": {"temperature": self.temperature, "seed": seed}}


@dataclass(frozen=True, slots=True, kw_only=True)
class RunnerSpec:
    """What a runner needs, as plain data (it crosses process boundaries)."""

    agent: str
    """``module:function`` of the agent."""
    reward: str | None
    """``module:function`` of the reward, or None."""
    base_dir: str
    """Directory put on ``sys.path`` to import them."""
    concurrency: int
    timeout_s: float
    max_attempts: int


@dataclass(frozen=True, slots=True, kw_only=True)
class EpisodeSpec:
    """One batch of episodes to run."""

    tasks: tuple[Task, ...]
    group_size: int
    group_prefix: str
    metadata: SamplingMetadata
    description: str = "episodes"


def _runner(control: Any, spec: RunnerSpec) -> tuple[Runner, Any]:
    reward = load_object(spec.reward, base_dir=spec.base_dir) if spec.reward else None
    runner = Runner(
        control,
        concurrency=spec.concurrency,
        timeout_s=spec.timeout_s,
        max_attempts=spec.max_attempts,
        reward_fn=reward,
    )
    return runner, load_object(spec.agent, base_dir=spec.base_dir)


def run_episodes(control: Any, runner_spec: RunnerSpec, episodes: EpisodeSpec) -> list[str]:
    """Run ``episodes`` in this process through ``control`` (a gateway); returns the episode ids
    (retried attempts included only through their final attempt), in task then sample order."""
    runner, agent = _runner(control, runner_spec)
    results = runner.run(
        agent,
        list(episodes.tasks),
        group_size=episodes.group_size,
        group_prefix=episodes.group_prefix,
        description=episodes.description,
        episode_metadata=episodes.metadata,
    )
    return [r.episode.id for r in results]


class _EpisodeWorker:
    """Body of the Ray actor: a runner over a :class:`~fulmen.gateway.RemoteGateway`."""

    def __init__(self, gateway_url: str, runner_spec: RunnerSpec) -> None:
        from fulmen.gateway import RemoteGateway

        self._control = RemoteGateway(gateway_url)
        self._spec = runner_spec

    def run(self, episodes: EpisodeSpec) -> list[str]:
        return run_episodes(self._control, self._spec, episodes)


def run_episodes_ray(
    gateway_url: str,
    runner_spec: RunnerSpec,
    episodes: EpisodeSpec,
    *,
    actors: int,
    workers: Sequence[Any] = (),
) -> tuple[list[str], list[Any]]:
    """Run ``episodes`` in ``actors`` Ray actors (tasks split round robin, whole groups per
    actor). ``workers`` reuses actors from a previous call. Ray must be initialised.

    Returns:
        The episode ids (grouped by actor) and the actors, to pass back next step.
    """
    import ray

    handles = list(workers)
    if not handles:
        remote_cls: Any = ray.remote(num_cpus=1)(_EpisodeWorker)
        handles = [remote_cls.remote(gateway_url, runner_spec) for _ in range(actors)]
    shares = [episodes.tasks[i :: len(handles)] for i in range(len(handles))]
    futures = [
        h.run.remote(
            EpisodeSpec(
                tasks=share,
                group_size=episodes.group_size,
                group_prefix=episodes.group_prefix,
                metadata=episodes.metadata,
                description=episodes.description,
            )
        )
        for h, share in zip(handles, shares, strict=True)
        if share
    ]
    ids: list[str] = [eid for part in ray.get(futures) for eid in part]
    return ids, handles
