"""``fulmen eval``: greedy held-out evaluation of a base model or a checkpoint."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from fulmen.config import ConfigError, TrainConfig
from fulmen.gateway import Gateway
from fulmen.loading import load_object
from fulmen.store import open_store
from fulmen_local.model.lora import ADAPTER_CONFIG, adapter_base, is_adapter_dir
from fulmen_local.model.policy import load_policy
from fulmen_local.server import InferenceServer
from fulmen_local.train.loop import (
    EvalResult,
    Log,
    evaluate_tasks,
    load_eval_tasks,
    local_settings,
    make_runner,
    policy_tool_parser,
    prepare_model,
)

__all__ = ["run_evaluation"]


async def run_evaluation(
    config: TrainConfig, *, checkpoint: Path | None = None, log: Log = print
) -> EvalResult:
    """Serve ``checkpoint`` (default: the base model) and evaluate the config's eval split.

    Episodes are recorded in a temporary store (evaluation never touches the run's store).
    """
    if not config.data.eval:
        raise ConfigError("[data] eval is not set; nothing to evaluate")
    local = local_settings(config)
    torch.set_num_threads(local.threads)
    adapter = checkpoint is not None and is_adapter_dir(checkpoint)
    if checkpoint is not None and not adapter and not (checkpoint / "config.json").exists():
        raise ConfigError(
            f"--checkpoint {str(checkpoint)!r} is not a model directory (no config.json or "
            f"{ADAPTER_CONFIG}); use a directory under <output_dir>/checkpoints/"
        )
    if checkpoint is not None and adapter:
        base = adapter_base(checkpoint) or prepare_model(config, log)
        policy = load_policy(base, local, checkpoint=checkpoint, for_training=False)
    else:
        source = checkpoint if checkpoint is not None else prepare_model(config, log)
        policy = load_policy(source, local, for_training=False)
    model, tokenizer = policy.serving, policy.tokenizer
    tasks = load_eval_tasks(config)
    agent = load_object(config.agent.entry, base_dir=config.base_dir)
    with tempfile.TemporaryDirectory(prefix="fulmen-eval-") as tmp:
        store = open_store(Path(tmp) / "eval.db")
        server = InferenceServer(
            model, tokenizer, model_name=config.model.name,
            tool_parser=policy_tool_parser(local, policy),
        )
        server.start_in_thread()
        gateway = Gateway(store, server.url)
        gateway.start_in_thread()
        try:
            runner = make_runner(config, gateway)
            return await evaluate_tasks(runner, agent, tasks, seed=config.run.seed)
        finally:
            gateway.stop_thread()
            server.stop()
            store.close()
