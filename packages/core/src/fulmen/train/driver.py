"""The step driver: the training loop every backend shares.

::

    agent code ──HTTP──> gateway ──HTTP──> policy.upstream_url (the backend's server, v_k)
                           │
                           └─> store ──> credit ──> batch ──> policy.update ──> publish v_{k+1}

Each step: ``tasks_per_step`` tasks (a seeded, resumable :class:`~fulmen.train.sampler.
TaskSampler`) × ``group_size`` episodes run through the runner (``[train] temperature``, a
per-episode seed derived from the run seed); their records are read back from the store,
credited and turned into rows (every exclusion counted in ``batch/*``); the backend's
:class:`~fulmen.train.policy.Policy` trains on them and publishes the next version. Every step
writes one train row of :mod:`fulmen.train.schema` to ``metrics.jsonl`` and is checked by the
alarms; held-out evaluation (greedy) runs before the first step, every ``[train] eval_every``
steps and after the last; checkpoints (:mod:`fulmen.train.checkpoints`) every
``[train] checkpoint_every`` steps and after the last. Each phase is timed on its own:
``rollout_s`` (episodes), ``update_s`` (:meth:`Policy.update <fulmen.train.policy.Policy.
update>`), ``publish_s`` (:meth:`~fulmen.train.policy.Policy.publish`, the weight sync).

A backend whose episodes run elsewhere (other processes, other nodes) passes its own
``runner_factory`` (:data:`~fulmen.train.rollouts.RunnerFactory`), and where the gateway
listens (``gateway_host``, ``gateway_port``) so that those runners reach it.

A backend builds its policy and hands it over::

    driver = StepDriver(config, log=log)
    driver.prepare(resume=resume)          # before building the policy: may clear output_dir
    policy = MyPolicy(...)                  # serving version 0
    try:
        result = asyncio.run(driver.run(policy))
    finally:
        policy.close()
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fulmen.batch import build_batch, group_records
from fulmen.config import ConfigError, TrainConfig
from fulmen.credit import assigner_from_config
from fulmen.drift import TokenView, run_drift_metrics, step_drift_metrics
from fulmen.gateway import Gateway
from fulmen.loading import load_object, load_tasks
from fulmen.observe.alarms import AlarmMonitor
from fulmen.policies import PolicyRoutes, policy_step_metrics
from fulmen.protocol import TerminationReason
from fulmen.store import open_store
from fulmen.train.checkpoints import Checkpoint, latest_checkpoint, write_checkpoint
from fulmen.train.evaluation import EvalResult, evaluate_tasks, load_eval_tasks
from fulmen.train.metrics_log import MetricsWriter, read_metrics
from fulmen.train.policy import Policy
from fulmen.train.rollouts import RolloutSampling, RunnerFactory, make_runner
from fulmen.train.sampler import TaskSampler
from fulmen.train.schema import (
    BATCH_PREFIX,
    check_update_metrics,
    credit_metrics,
    rollout_metrics,
)

__all__ = ["Log", "StepDriver", "TrainResult", "credit_options", "policy_routes"]

Log = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class TrainResult:
    """What a training run achieved."""

    before: EvalResult | None
    """Held-out result before the first step (None when resumed or without an eval split)."""
    after: EvalResult | None
    """The last held-out result of this process (None without an eval split)."""
    steps: int
    wall_s: float
    """Seconds from :meth:`StepDriver.prepare` to the end of :meth:`StepDriver.run`."""
    output_dir: Path


class StepDriver:
    """Runs a config's training job on a backend's :class:`~fulmen.train.policy.Policy` (see
    the module docstring). One driver runs one job.

    Args:
        config: The training config.
        log: Where progress lines go (one line per step, resume and evaluation notices).
        tensorboard: Also write TensorBoard event files (needs ``tensorboardX``).
        runner_factory: Makes the episode runner from the config and the started gateway
            (default :func:`~fulmen.train.rollouts.make_runner`: episodes in this process).
        gateway_host: The interface the gateway listens on (``0.0.0.0`` for runners on
            other machines).
        gateway_port: Its port (0: any free one).
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        log: Log = print,
        tensorboard: bool = False,
        runner_factory: RunnerFactory = make_runner,
        gateway_host: str = "127.0.0.1",
        gateway_port: int = 0,
    ) -> None:
        self.config = config
        self.log = log
        self.tensorboard = tensorboard
        self.runner_factory = runner_factory
        self.gateway_host = gateway_host
        self.gateway_port = gateway_port
        self.output_dir = config.resolve(config.run.output_dir)
        """``[run] output_dir``: ``metrics.jsonl``, ``episodes.db``, ``checkpoints/``."""
        self.checkpoints = self.output_dir / "checkpoints"
        self.resume_from: Checkpoint | None = None
        """The checkpoint :meth:`run` continues from (set by :meth:`prepare`)."""
        self._resume = False
        self._started: float | None = None

    def prepare(self, *, resume: bool = False) -> Checkpoint | None:
        """Ready the output directory; return the checkpoint to resume from (None: step 0).

        Call it before building the policy: a fresh run removes what an earlier, unfinished
        attempt left in ``output_dir`` (which may be where ``[model] build`` writes the base).

        Raises:
            ConfigError: not resuming, and ``output_dir`` already holds a run's metrics.
        """
        self._started = time.perf_counter()
        out = self.output_dir
        self._resume = resume
        self.resume_from = latest_checkpoint(self.checkpoints) if resume else None
        if resume and self.resume_from is None:
            self.log(f"--resume: no checkpoint under {self.checkpoints}; starting from step 0")
        if not resume and (out / "metrics.jsonl").exists():
            raise ConfigError(
                f"{out} already holds a run; continue it with --resume, or remove the directory "
                f"(rm -r {out}) to start over"
            )
        if not resume and out.exists():
            shutil.rmtree(out)
        return self.resume_from

    async def run(self, policy: Policy) -> TrainResult:
        """Train ``policy`` for ``[train] steps`` (from the resumed step). The policy stays open.

        Raises:
            ConfigError: a bad agent, data, credit or tracker setting, or a checkpoint that does
                not fit the policy.
            fulmen.errors.BackendError: the policy's update broke the metrics schema.
        """
        started = self._started if self._started is not None else time.perf_counter()
        if self._started is None:
            self.prepare()
        config, t, out = self.config, self.config.train, self.output_dir
        train_tasks = load_tasks(config.data.train, split="train", base_dir=config.base_dir)
        eval_tasks = load_eval_tasks(config)
        agent = load_object(config.agent.entry, base_dir=config.base_dir)
        assigner = assigner_from_config(config.credit.assigner, credit_options(config))
        sampler = TaskSampler(train_tasks, seed=config.run.seed)
        start_step = 0
        if self.resume_from is not None:
            checkpoint = self.resume_from
            policy.load(checkpoint.path)
            try:
                sampler.load_state(checkpoint.state()["sampler"])
            except (KeyError, ValueError) as exc:
                raise ConfigError(f"checkpoint {checkpoint.path} has no valid sampler state ({exc}); start over") from exc
            start_step = checkpoint.step
            policy.publish(start_step)
            self.log(f"resumed from {checkpoint.path} (step {start_step})")
        out.mkdir(parents=True, exist_ok=True)
        # Trackers first: a missing one fails before any episode runs.
        history = [r for r in read_metrics(out / "metrics.jsonl") if r.get("kind", "train") == "train"]
        alarms = AlarmMonitor(config.alarms, history=history)
        metrics = MetricsWriter(
            out, tensorboard=self.tensorboard, trackers=config.run.trackers,
            run_name=config.run.name, config=asdict(config),
        )
        store = open_store(out / "episodes.db")
        gateway: Gateway | None = None
        before: EvalResult | None = None
        after: EvalResult | None = None
        try:
            if self._resume:
                crashed = store.fail_unfinished(TerminationReason.CRASHED)
                if crashed:
                    self.log(f"marked {len(crashed)} episodes of the interrupted step as crashed (never trained)")
            gateway = Gateway(
                store, policy.upstream_url, routes=policy_routes(config),
                host=self.gateway_host, port=self.gateway_port,
                continuity=config.gateway.continuity, tool_parser=config.gateway.tool_parser,
                strict_tools=config.gateway.strict_tools,
            )
            gateway.start_in_thread()
            runner = self.runner_factory(config, gateway)
            if eval_tasks and start_step == 0:
                before = await evaluate_tasks(runner, agent, eval_tasks, seed=config.run.seed)
                metrics.write("eval", 0, before.row())
                self.log(f"step 0: held-out success {before.success_rate:.0%} (greedy, {before.episodes} tasks)")
            for step in range(start_step, t.steps):
                step_started = time.perf_counter()
                results = await runner.arun(
                    agent, sampler.next(t.tasks_per_step), group_size=t.group_size,
                    group_prefix=f"step{step + 1}", description=f"step {step + 1}",
                    episode_metadata=RolloutSampling(t.temperature, config.run.seed, step),
                )
                rollout_s = time.perf_counter() - step_started
                records = store.records([r.episode.id for r in results])
                batch = build_batch(
                    group_records(records), assigner, mode=config.batch.mode,
                    max_len=config.batch.max_len, overlong=config.batch.overlong,
                )
                row: dict[str, Any] = dict(rollout_metrics(records, batch.stats))
                row.update(credit_metrics(batch.stats))
                row.update(step_drift_metrics(records, policy if isinstance(policy, TokenView) else None))
                if config.policies:
                    per_policy, idle = policy_step_metrics(records, batch.rows, config.policies)
                    row.update(per_policy)
                    for warning in idle:
                        self.log(f"step {step + 1}: {warning}")
                update_started = time.perf_counter()
                if batch.rows:
                    row.update(check_update_metrics(policy.update(batch.rows)))
                else:
                    row["skipped_update"] = 1
                row["update_s"] = time.perf_counter() - update_started
                done = step + 1
                publish_started = time.perf_counter()
                policy.publish(done)
                row["publish_s"] = time.perf_counter() - publish_started
                row["rollout_s"] = rollout_s
                row["rollout_tokens_per_s"] = row["response_tokens"] / max(rollout_s, 1e-9)
                row["train_tokens_per_s"] = row.get("num_tokens", 0.0) / max(row["update_s"], 1e-9)
                row["rows"] = len(batch.rows)
                row.update({f"{BATCH_PREFIX}{k}": v for k, v in batch.stats.items()})
                if eval_tasks and ((t.eval_every and done % t.eval_every == 0) or done == t.steps):
                    after = await evaluate_tasks(runner, agent, eval_tasks, seed=config.run.seed)
                    metrics.write("eval", done, after.row())
                    row["eval_success_rate"] = after.success_rate
                history.append(row)
                row.update(run_drift_metrics(history))
                row["step_s"] = time.perf_counter() - step_started
                metrics.write("train", done, row)
                alarms.observe({"kind": "train", "step": done, **row})
                self.log(_progress_line(done, t.steps, row, time.perf_counter() - started))
                if done % t.checkpoint_every == 0 or done == t.steps:
                    write_checkpoint(
                        self.checkpoints, step=done, save=policy.save,
                        state={"sampler": sampler.state()},
                    )
        finally:
            metrics.close()
            if gateway is not None:
                gateway.stop_thread()
            store.close()
        wall = time.perf_counter() - started
        return TrainResult(before=before, after=after, steps=t.steps, wall_s=wall, output_dir=out)


def credit_options(config: TrainConfig) -> dict[str, Any]:
    """``[credit]``'s options; with ``[[policy]]``, ``agents`` is every policy's agents (the
    rest are served by the frozen base and masked)."""
    options = dict(config.credit.options)
    if config.policies:
        options["agents"] = [agent for p in config.policies for agent in p.agents]
    return options


def policy_routes(config: TrainConfig) -> PolicyRoutes | None:
    """The gateway's routes to the config's policies (None without ``[[policy]]``)."""
    if not config.policies:
        return None
    return PolicyRoutes.of(config.policies, base=config.model.name)


def _progress_line(step: int, steps: int, row: dict[str, Any], elapsed: float) -> str:
    line = (
        f"step {step}/{steps} · reward {row['reward_mean']:.2f} · tool calls "
        f"{row['tool_call_rate']:.0%} · kl {row.get('kl', 0.0):.4f} · clip "
        f"{row.get('clip_fraction', 0.0):.3f} · dropped groups {row['dropped_groups']}"
    )
    if "eval_success_rate" in row:
        line += f" · held-out {row['eval_success_rate']:.0%}"
    return line + f" · {row['step_s']:.1f} s (total {elapsed:.0f} s)"
