"""Where the user's agent episodes run: in the trainer process, or in Ray actors.

Either way episodes reach the policy only through fulmen's gateway (HTTP), so they can run on
any machine that reaches it; the gateway records every call into the trainer's store and the
trainer reads the records back by episode id. With ``[verl] ray_runners = N`` the step's
tasks are split over ``N`` Ray actors (placed by Ray anywhere in the cluster, ``num_cpus=1``
each, plus ``[verl] ray_runner_resources``); each runs a :class:`fulmen.runner.Runner`
against a :class:`fulmen.gateway.RemoteGateway`. Agents running outside Ray entirely (other
services) only need ``ctx.base_url`` of their episode, exactly as with the embedded backend.

On other nodes:

* the actors reach the gateway at :func:`runner_gateway_url` (``[verl] gateway_advertise``,
  else the head's Ray node address when the gateway listens on ``0.0.0.0``);
* :func:`runner_runtime_env` (merged into the job's runtime env at ``ray.init``) ships the
  project directory (the agent code, ``.gitignore`` honoured) as Ray's ``working_dir`` and
  fulmen's own packages as ``py_modules``; the
  third-party packages (the agent's framework, aiohttp, msgspec...) must be installed on every
  node. An actor that cannot start says so in one line (:class:`~fulmen.errors.BackendError`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fulmen.config import TrainConfig
from fulmen.errors import BackendError, FulmenError
from fulmen.gateway import Gateway
from fulmen.loading import load_object
from fulmen.protocol import Task
from fulmen.runner import EpisodeMetadataFn, EpisodeResult, Runner
from fulmen.train import RunnerFactory, make_runner

from fulmen_verl.config import VerlConfig, advertised_url, is_wildcard

__all__ = [
    "EpisodeSpec",
    "RayEpisodeRunner",
    "RunnerSpec",
    "run_episodes",
    "run_episodes_ray",
    "runner_factory",
    "runner_gateway_url",
    "runner_runtime_env",
]

SHIP_EXCLUDES = (
    ".git",
    ".venv*",
    "runs",
    "__pycache__",
    "*.whl",
    "*.safetensors",
    "*.bin",
    "*.pt",
    "*.db",
)
"""Never shipped with the project directory (besides what its ``.gitignore`` excludes)."""


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
    shipped: bool = False
    """``base_dir`` is the job's shipped ``working_dir`` (:func:`runner_runtime_env`): Ray
    actors import from their own working directory, its copy on their node."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EpisodeSpec:
    """One batch of episodes to run (picklable: it crosses process boundaries)."""

    tasks: tuple[Task, ...]
    group_size: int
    group_prefix: str | None
    metadata: EpisodeMetadataFn | None
    """Each slot's metadata (core's ``RolloutSampling`` / ``GreedySampling``)."""
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


def run_episodes(
    control: Any, runner_spec: RunnerSpec, episodes: EpisodeSpec
) -> list[EpisodeResult]:
    """Run ``episodes`` in this process through ``control`` (a gateway or a
    :class:`~fulmen.gateway.RemoteGateway`); results in task then sample order, each without
    the agent's return value (``output=None``: it stays in the episode's record and need not
    be picklable)."""
    runner, agent = _runner(control, runner_spec)
    results = runner.run(
        agent,
        list(episodes.tasks),
        group_size=episodes.group_size,
        group_prefix=episodes.group_prefix,
        description=episodes.description,
        episode_metadata=episodes.metadata,
    )
    return [replace(r, output=None) for r in results]


def runner_gateway_url(
    verl: VerlConfig, gateway_url: str, *, node_ip: Callable[[], str] | None = None
) -> str:
    """The gateway's URL for runners on any node of the cluster.

    Args:
        verl: ``gateway_advertise`` and ``gateway_host`` are read.
        gateway_url: the started gateway's own URL (``http://bind-host:port``).
        node_ip: this node's address as Ray knows it (default: ``ray.util.get_node_ip_address``).

    Returns:
        ``gateway_advertise`` as a URL (the gateway's port when it names none); else, when the
        gateway listens on every interface, ``http://<this node's Ray address>:<port>``; else
        ``gateway_url``.
    """
    port = urlsplit(gateway_url).port or 80
    if verl.gateway_advertise is not None:
        return advertised_url(verl.gateway_advertise, port=port)
    if not is_wildcard(verl.gateway_host):
        return gateway_url
    if node_ip is None:
        import ray

        node_ip = ray.util.get_node_ip_address
    host = node_ip()
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def runner_runtime_env(project_dir: str, *, ship_code: bool) -> dict[str, Any]:
    """What to add to the job's Ray runtime env (``ray.init(runtime_env=...)``: Ray uploads
    local directories at the job level only) so runner actors on any node have the code: the
    project directory as ``working_dir`` (the actors import the agent from there; what its
    ``.gitignore`` and :data:`SHIP_EXCLUDES` name is left out) and fulmen's packages as
    ``py_modules`` (every node runs the driver's fulmen). Empty when ``ship_code`` is false
    (every node then has both installed at the same paths)."""
    if not ship_code:
        return {}
    import fulmen

    import fulmen_verl

    return {
        "working_dir": str(Path(project_dir).resolve()),
        "py_modules": [str(Path(m.__file__ or "").parent) for m in (fulmen, fulmen_verl)],
        "excludes": list(SHIP_EXCLUDES),
    }


class _EpisodeWorker:
    """Body of the Ray actor: a runner over a :class:`~fulmen.gateway.RemoteGateway`. With
    ``RunnerSpec.shipped``, the agent is imported from the actor's working directory (the
    shipped project, unpacked on its node), not from the driver's path."""

    def __init__(self, gateway_url: str, runner_spec: RunnerSpec) -> None:
        from fulmen.gateway import RemoteGateway

        self._control = RemoteGateway(gateway_url)
        spec = runner_spec
        self._spec = replace(spec, base_dir=os.getcwd()) if spec.shipped else spec

    def run(self, episodes: EpisodeSpec) -> list[EpisodeResult]:
        return run_episodes(self._control, self._spec, episodes)


def run_episodes_ray(
    gateway_url: str,
    runner_spec: RunnerSpec,
    episodes: EpisodeSpec,
    *,
    actors: int,
    workers: Sequence[Any] = (),
    resources: Mapping[str, float] | None = None,
) -> tuple[list[EpisodeResult], list[Any]]:
    """Run ``episodes`` in ``actors`` Ray actors (tasks split round robin, whole groups per
    actor). ``workers`` reuses actors from a previous call. Ray must be initialised.

    Args:
        gateway_url: where the actors reach the gateway (:func:`runner_gateway_url`).
        runner_spec: the agent, reward and runner settings.
        episodes: the tasks and groups to run.
        actors: how many actors to start (when ``workers`` is empty).
        workers: the actors of a previous call, reused.
        resources: Ray custom resources each new actor asks for (``[verl]
            ray_runner_resources``), besides one CPU.

    Returns:
        The results (:func:`run_episodes`'s, grouped by actor) and the actors, to pass back
        next time.

    Raises:
        BackendError: an actor could not start (its runtime env failed, or fulmen cannot be
            imported on its node).
        FulmenError: what the runner in an actor raised (e.g. the agent cannot be imported).
    """
    import ray
    from ray.exceptions import RayActorError, RayTaskError, RuntimeEnvSetupError

    handles = list(workers)
    if not handles:
        remote_cls: Any = ray.remote(num_cpus=1, resources=dict(resources or {}))(_EpisodeWorker)
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
    try:
        parts: list[list[EpisodeResult]] = ray.get(futures)
    except RayTaskError as exc:  # raised by the runner in the actor: a bad agent spec...
        if isinstance(exc.cause, FulmenError):
            raise exc.cause from None
        raise
    except (RayActorError, RuntimeEnvSetupError) as exc:
        first = next((line for line in str(exc).splitlines() if line.strip()), repr(exc))
        raise BackendError(
            f"a [verl] ray_runners actor could not start: {first.strip()[:300]}; every node "
            "needs the agent's third-party packages installed (the same `uv sync --locked`), "
            "and with ship_code = false also the project and fulmen at the same paths"
        ) from None
    return [result for part in parts for result in part], handles


class RayEpisodeRunner:
    """The step driver's episode runner (:class:`fulmen.train.EpisodeRunner`) for ``[verl]
    ray_runners``: each call's episodes run in the same Ray actors (:func:`run_episodes_ray`),
    started on the first call. The actors import the agent from :class:`RunnerSpec` (the
    config's ``[agent] entry``): the ``agent`` the driver passes is not shipped."""

    def __init__(
        self,
        gateway_url: str,
        spec: RunnerSpec,
        *,
        actors: int,
        resources: Mapping[str, float] | None = None,
    ) -> None:
        self.gateway_url = gateway_url
        """Where the actors reach the gateway (:func:`runner_gateway_url`)."""
        self.spec = spec
        self.actors = actors
        self.resources = dict(resources or {})
        self._workers: list[Any] = []

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
        """Run ``group_size`` episodes of every task in the actors (whole groups per actor);
        results grouped by actor, without the agents' return values (:func:`run_episodes`).

        Raises:
            BackendError: an actor could not start.
            FulmenError: what a runner in an actor raised.
        """
        spec = EpisodeSpec(
            tasks=tuple(tasks),
            group_size=group_size,
            group_prefix=group_prefix,
            metadata=episode_metadata,
            description=description,
        )
        results, self._workers = await asyncio.to_thread(
            run_episodes_ray,
            self.gateway_url,
            self.spec,
            spec,
            actors=self.actors,
            workers=self._workers,
            resources=self.resources,
        )
        return results


def runner_factory(verl: VerlConfig) -> RunnerFactory:
    """The step driver's runner factory: core's :func:`~fulmen.train.make_runner` (episodes in
    the trainer process), or with ``[verl] ray_runners`` a :class:`RayEpisodeRunner` reaching
    the gateway at :func:`runner_gateway_url`."""
    if not verl.ray_runners:
        return make_runner

    def make(config: TrainConfig, gateway: Gateway) -> RayEpisodeRunner:
        spec = RunnerSpec(
            agent=config.agent.entry,
            reward=config.agent.reward,
            base_dir=config.base_dir,
            concurrency=config.agent.concurrency,
            timeout_s=config.agent.timeout_s,
            max_attempts=config.agent.max_attempts,
            shipped=verl.ship_code,  # see runner_runtime_env
        )
        return RayEpisodeRunner(
            runner_gateway_url(verl, gateway.url),
            spec,
            actors=verl.ray_runners,
            resources=verl.ray_runner_resources,
        )

    return make
