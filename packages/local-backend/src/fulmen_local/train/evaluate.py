"""``fulmen eval`` on the embedded backend: serve the base model or a checkpoint and run core's
greedy held-out evaluation (:func:`fulmen.train.evaluate_upstream`) against it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from fulmen.config import ConfigError, TrainConfig
from fulmen.train import EvalResult, evaluate_upstream
from fulmen_local.model.lora import ADAPTER_CONFIG, adapter_base, is_adapter_dir
from fulmen_local.model.policy import load_policy
from fulmen_local.server import InferenceServer
from fulmen_local.train.model_setup import local_settings, policy_tool_parser, prepare_model

__all__ = ["run_evaluation"]

Log = Callable[[str], None]


async def run_evaluation(
    config: TrainConfig, *, checkpoint: Path | None = None, log: Log = print
) -> EvalResult:
    """Serve ``checkpoint`` (default: the base model) and evaluate the config's eval split.

    Episodes are recorded in a temporary store (evaluation never touches the run's store).

    Raises:
        ConfigError: no ``[data] eval``, or ``checkpoint`` is not a model or adapter directory.
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
    server = InferenceServer(
        policy.serving, policy.tokenizer, model_name=config.model.name,
        tool_parser=policy_tool_parser(local, policy),
    )
    server.start_in_thread()
    try:
        return await evaluate_upstream(config, server.url)
    finally:
        server.stop()
