"""The embedded training loop: rollouts through the real stack, credit, GRPO update, hot swap.

One process holds everything, each piece the same one a distributed setup would use::

    agent code ──HTTP──> gateway ──HTTP──> inference server (policy v_k)
                           │
                           └─> SQLite store ──> credit ──> rows ──> GRPO update ──> v_{k+1}

Each step: ``tasks_per_step`` tasks × ``group_size`` episodes run through the runner (sampling
at ``temperature``, per-call seeds derived from the run seed so rollouts are reproducible);
their records are read back from the store, credited group by group, turned into rows and
trained on; the new weights are hot-swapped into the server. Held-out evaluation uses greedy
decoding. The trainer's model and the server's model are separate copies: the server never
sees a half-updated model.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from fulmen.batch import build_batch, group_records
from fulmen.config import ConfigError, TrainConfig
from fulmen.credit import assigner_from_config
from fulmen.gateway import Gateway
from fulmen.loading import load_object, load_tasks
from fulmen.observe.alarms import AlarmMonitor
from fulmen.protocol import Task, TerminationReason
from fulmen.runner import EpisodeResult, Runner
from fulmen.store import open_store
from fulmen_local.model.load import context_length, is_hub_id
from fulmen_local.model.policy import PolicyModels, load_policy
from fulmen_local.model.tool_format import choose_tool_parser
from fulmen_local.server import InferenceServer
from fulmen_local.settings import LocalSettings, parse_local_settings
from fulmen_local.train.checkpoint import latest_checkpoint, load_trainer_state, save_checkpoint
from fulmen_local.train.metrics import MetricsWriter, plot_curves, read_metrics
from fulmen_local.train.sampler import TaskSampler
from fulmen_local.trainer.updater import GRPOConfig, GRPOUpdater
from transformers import PretrainedConfig

__all__ = [
    "EvalResult",
    "TrainResult",
    "check_context",
    "evaluate_tasks",
    "load_eval_tasks",
    "local_settings",
    "make_runner",
    "policy_tool_parser",
    "prepare_model",
    "run_training",
]

Log = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class EvalResult:
    """Greedy evaluation on held-out tasks."""

    success_rate: float
    """Fraction of tasks whose outcome reward is positive (failed episodes count as misses)."""
    reward_mean: float
    episodes: int
    failed: int


@dataclass(frozen=True, slots=True)
class TrainResult:
    """What a training run achieved."""

    before: EvalResult | None
    after: EvalResult | None
    steps: int
    wall_s: float
    output_dir: Path


def local_settings(config: TrainConfig) -> LocalSettings:
    """The config's ``[local]`` table, validated."""
    return parse_local_settings(
        config.backend_options.get("local", {}), source="config"
    )


def prepare_model(config: TrainConfig, log: Log) -> Path | str:
    """The base model: a directory (built with ``[model] build`` when it does not exist yet) or
    a Hugging Face Hub id (``org/name``, when no such local path exists and no build is set)."""
    path = config.resolve(config.model.path)
    if (path / "config.json").exists():
        return path
    if config.model.build is None:
        if is_hub_id(config.model.path):
            return config.model.path
        raise ConfigError(
            f"[model] path {str(path)!r} holds no model and [model] build is not set; point path "
            "at a Hugging Face model directory or Hub id, or name a build function"
        )
    log(f"building the base model into {path} ({config.model.build}) …")
    started = time.perf_counter()
    load_object(config.model.build, base_dir=config.base_dir)(path)
    log(f"base model built in {time.perf_counter() - started:.0f} s")
    return path


def load_eval_tasks(config: TrainConfig) -> list[Task]:
    """The config's eval split, cut to ``[train] eval_size`` (empty when there is none)."""
    if not config.data.eval:
        return []
    tasks = load_tasks(config.data.eval, split="eval", base_dir=config.base_dir)
    size = config.train.eval_size
    return tasks if size is None else tasks[:size]


def make_runner(config: TrainConfig, control: Gateway) -> Runner:
    """A runner with the config's ``[agent]`` limits and reward function."""
    reward = config.agent.reward
    return Runner(
        control,
        concurrency=config.agent.concurrency,
        timeout_s=config.agent.timeout_s,
        max_attempts=config.agent.max_attempts,
        reward_fn=load_object(reward, base_dir=config.base_dir) if reward else None,
    )


def _outcome(result: EpisodeResult) -> float:
    return result.outcome if result.ok and result.outcome is not None else 0.0


async def evaluate_tasks(
    runner: Runner, agent: Any, tasks: list[Task], *, seed: int
) -> EvalResult:
    """Run every task once with greedy decoding and score it."""
    results = await runner.arun(
        agent, tasks, group_size=1, description="eval",
        episode_metadata=lambda task, k: {"sampling": {"temperature": 0.0, "seed": seed}},
    )
    outcomes = [_outcome(r) for r in results]
    return EvalResult(
        success_rate=sum(o > 0 for o in outcomes) / len(outcomes),
        reward_mean=sum(outcomes) / len(outcomes),
        episodes=len(results),
        failed=sum(not r.ok for r in results),
    )


def _stable_seed(*parts: object) -> int:
    """A seed that depends only on ``parts`` (not on Python's per-process hash salt)."""
    return zlib.crc32(":".join(map(str, parts)).encode()) & 0x7FFFFFFF


def _step_metrics(results: list[EpisodeResult], records: list[Any], stats: dict[str, int]) -> dict[str, Any]:
    ok = [r for r in results if r.ok]
    outcomes = [_outcome(r) for r in ok]
    transitions = [t for rec in records for t in rec.transitions]
    infra = sum(
        1 for r in results
        if not r.ok and r.episode.termination is not None and r.episode.termination.infrastructure
    )
    return {
        "reward_mean": statistics.fmean(outcomes) if outcomes else 0.0,
        "reward_std": statistics.pstdev(outcomes) if len(outcomes) > 1 else 0.0,
        "success_rate": sum(o > 0 for o in outcomes) / max(len(results), 1),
        "episodes": len(results),
        "failed_episodes": len(results) - len(ok),
        "infra_failed_episodes": infra,
        "retried_episodes": sum(r.attempts > 1 for r in results),
        "llm_calls": len(transitions),
        "tool_call_rate": sum(bool(t.tool_calls) for t in transitions) / max(len(transitions), 1),
        "response_tokens": sum(len(t.response_token_ids) for t in transitions),
        "dropped_groups": stats.get("dropped_groups_no_signal", 0),
        "drift_breaks": sum(v for k, v in stats.items() if k.startswith("merge_breaks_")),
        "timeouts": sum(
            1 for r in results if r.episode.termination is TerminationReason.TIMEOUT
        ),
    }


def run_training(config: TrainConfig, *, resume: bool = False, log: Log = print) -> TrainResult:
    """Run the training job described by ``config`` (see the module docstring)."""
    return asyncio.run(_train(config, resume=resume, log=log))


def check_context(config: TrainConfig, policy: PolicyModels) -> None:
    """Refuse a ``[train] max_tokens`` that leaves no room for a prompt in the model's context.

    Raises:
        ConfigError: ``max_tokens`` is not smaller than the context length.
    """
    model_config = getattr(policy.serving, "config", None)
    length = context_length(model_config) if isinstance(model_config, PretrainedConfig) else None
    if length is not None and config.train.max_tokens >= length:
        raise ConfigError(
            f"[train] max_tokens = {config.train.max_tokens} leaves no room for a prompt in the "
            f"model's context of {length} tokens ([model] path = {config.model.path!r}); lower "
            "max_tokens or use a model with a longer context"
        )


def policy_tool_parser(local: LocalSettings, policy: PolicyModels) -> str | None:
    """The server's tool-call parser for ``policy`` (see :mod:`fulmen_local.model.tool_format`)."""
    model_config = getattr(policy.serving, "config", None)
    model_type = getattr(model_config, "model_type", "")
    return choose_tool_parser(local.tool_parser, str(model_type), policy.tokenizer)


async def _train(config: TrainConfig, *, resume: bool, log: Log) -> TrainResult:
    started = time.perf_counter()
    local = local_settings(config)
    torch.set_num_threads(local.threads)
    torch.manual_seed(config.run.seed)
    out = config.resolve(config.run.output_dir)
    ckpt_root = out / "checkpoints"
    checkpoint = latest_checkpoint(ckpt_root) if resume else None
    if resume and checkpoint is None:
        log(f"--resume: no checkpoint under {ckpt_root}; starting from step 0")
    if not resume and (out / "metrics.jsonl").exists():
        raise ConfigError(
            f"{out} already holds a run; continue it with --resume, or remove the directory "
            f"(rm -r {out}) to start over"
        )
    if not resume and out.exists():
        shutil.rmtree(out)
    base = prepare_model(config, log)
    policy = load_policy(base, local, checkpoint=checkpoint.path if checkpoint else None)
    check_context(config, policy)
    policy_tool_parser(local, policy)  # a bad [local] tool_parser fails before anything starts
    model, tokenizer = policy.trainer, policy.tokenizer
    log(
        f"policy: {type(policy.serving).__name__} on {policy.device} ({policy.dtype}, "
        f"{'LoRA' if policy.lora else 'full fine-tuning'}; "
        f"{sum(p.numel() for p in policy.trainable_parameters()):,} trained parameters)"
    )
    train_tasks = load_tasks(config.data.train, split="train", base_dir=config.base_dir)
    eval_tasks = load_eval_tasks(config)
    agent = load_object(config.agent.entry, base_dir=config.base_dir)
    assigner = assigner_from_config(config.credit.assigner, config.credit.options)
    t = config.train
    updater = GRPOUpdater(
        model,
        GRPOConfig(
            lr=t.learning_rate, weight_decay=t.weight_decay, clip_low=t.clip_eps,
            clip_high=t.clip_eps, kl_coef=t.kl_coef, max_grad_norm=t.grad_clip,
            micro_batch_tokens=local.micro_batch_tokens,
        ),
        pad_token_id=_pad_id(tokenizer),
        reference=policy.reference() if t.kl_coef > 0 else None,
        reference_context=policy.adapters_disabled if policy.lora else None,
        autocast_dtype=policy.dtype,
    )
    sampler = TaskSampler(train_tasks, seed=config.run.seed)
    start_step = 0
    if checkpoint is not None:
        extra = load_trainer_state(checkpoint, updater.optimizer)
        sampler.load_state(extra["sampler"])
        start_step = checkpoint.step
        log(f"resumed from {checkpoint.path} (step {start_step})")
    out.mkdir(parents=True, exist_ok=True)
    # Trackers first: a missing one fails before any server thread starts.
    alarms = AlarmMonitor(config.alarms, history=read_metrics(out / "metrics.jsonl"))
    metrics = MetricsWriter(
        out, trackers=config.run.trackers, run_name=config.run.name, config=asdict(config)
    )
    store = open_store(out / "episodes.db")
    if resume:
        crashed = store.fail_unfinished(TerminationReason.CRASHED)
        if crashed:
            log(f"marked {len(crashed)} episodes of the interrupted step as crashed (never trained)")
    server = InferenceServer(
        policy.serving, tokenizer, model_name=config.model.name,
        max_batch_size=local.max_batch_size, policy_version=start_step,
        tool_parser=policy_tool_parser(local, policy),
    )
    server.start_in_thread()
    gateway = Gateway(store, server.url)
    gateway.start_in_thread()
    runner = make_runner(config, gateway)
    before: EvalResult | None = None
    after: EvalResult | None = None
    try:
        if eval_tasks and start_step == 0:
            before = await evaluate_tasks(runner, agent, eval_tasks, seed=config.run.seed)
            metrics.write("eval", 0, _eval_row(before))
            log(f"step 0: held-out success {before.success_rate:.0%} (greedy, {before.episodes} tasks)")
        for step in range(start_step, t.steps):
            step_started = time.perf_counter()
            tasks = sampler.next(t.tasks_per_step)
            results = await runner.arun(
                agent, tasks, group_size=t.group_size, group_prefix=f"step{step + 1}",
                description=f"step {step + 1}",
                episode_metadata=lambda task, k, s=step: {
                    "sampling": {
                        "temperature": t.temperature,
                        "seed": _stable_seed(config.run.seed, s, task.id, k),
                    }
                },
            )
            rollout_s = time.perf_counter() - step_started
            records = store.records([r.episode.id for r in results])
            batch = build_batch(
                group_records(records), assigner, mode=config.batch.mode,
                max_len=config.batch.max_len, overlong=config.batch.overlong,
            )
            row = _step_metrics(results, records, batch.stats)
            update_started = time.perf_counter()
            if batch.rows:
                row.update(updater.update(batch.rows))
            else:
                row["skipped_update"] = 1
            server.update_weights(policy.weights_for_server(), version=step + 1)
            row["update_s"] = time.perf_counter() - update_started
            row["rollout_s"] = rollout_s
            row["rollout_tokens_per_s"] = row["response_tokens"] / max(rollout_s, 1e-9)
            row["train_tokens_per_s"] = row.get("num_tokens", 0.0) / max(row["update_s"], 1e-9)
            row["rows"] = len(batch.rows)
            row.update({f"batch/{k}": v for k, v in batch.stats.items()})
            done = step + 1
            if eval_tasks and ((t.eval_every and done % t.eval_every == 0) or done == t.steps):
                after = await evaluate_tasks(runner, agent, eval_tasks, seed=config.run.seed)
                metrics.write("eval", done, _eval_row(after))
                row["eval_success_rate"] = after.success_rate
            row["step_s"] = time.perf_counter() - step_started
            metrics.write("train", done, row)
            alarms.observe({"kind": "train", "step": done, **row})
            log(_progress_line(done, t.steps, row, time.perf_counter() - started))
            if done % t.checkpoint_every == 0 or done == t.steps:
                save_checkpoint(
                    ckpt_root, step=done, model=model, tokenizer=tokenizer,
                    optimizer=updater.optimizer, extra={"sampler": sampler.state()},
                )
    finally:
        metrics.close()
        gateway.stop_thread()
        server.stop()
        store.close()
    png = plot_curves(out / "metrics.jsonl", out / "curve.png", title=config.run.name)
    wall = time.perf_counter() - started
    log(f"curve: {png}")
    return TrainResult(before=before, after=after, steps=t.steps, wall_s=wall, output_dir=out)


def _pad_id(tokenizer: Any) -> int:
    pad = getattr(tokenizer, "pad_token_id", None)
    return pad if isinstance(pad, int) else 0


def _eval_row(result: EvalResult) -> dict[str, Any]:
    return {
        "success_rate": result.success_rate,
        "reward_mean": result.reward_mean,
        "episodes": result.episodes,
        "failed_episodes": result.failed,
    }


def _progress_line(step: int, steps: int, row: dict[str, Any], elapsed: float) -> str:
    line = (
        f"step {step}/{steps} · reward {row['reward_mean']:.2f} · tool calls "
        f"{row['tool_call_rate']:.0%} · kl {row.get('kl', 0.0):.4f} · clip "
        f"{row.get('clip_fraction', 0.0):.3f} · dropped groups {row['dropped_groups']}"
    )
    if "eval_success_rate" in row:
        line += f" · held-out {row['eval_success_rate']:.0%}"
    return line + f" · {row['step_s']:.1f} s (total {elapsed:.0f} s)"
