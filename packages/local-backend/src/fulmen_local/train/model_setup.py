"""What the embedded backend reads off a training config before it serves or trains: the
``[local]`` settings, the base model (built when missing), the context-length check and the
server's tool-call parser."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from fulmen.config import ConfigError, TrainConfig
from fulmen.loading import load_object
from fulmen_local.model.load import context_length, is_hub_id
from fulmen_local.model.policy import PolicyModels
from fulmen_local.model.tool_format import choose_tool_parser
from fulmen_local.settings import LocalSettings, parse_local_settings
from transformers import PretrainedConfig

__all__ = ["check_context", "local_settings", "policy_tool_parser", "prepare_model"]

Log = Callable[[str], None]


def local_settings(config: TrainConfig) -> LocalSettings:
    """The config's ``[local]`` table, validated."""
    return parse_local_settings(config.backend_options.get("local", {}), source="config")


def prepare_model(config: TrainConfig, log: Log) -> Path | str:
    """The base model: a directory (built with ``[model] build`` when it does not exist yet) or
    a Hugging Face Hub id (``org/name``, when no such local path exists and no build is set).

    Raises:
        ConfigError: no model at ``[model] path`` and no way to get one.
    """
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


def check_context(max_tokens: int, policy: PolicyModels, source: str | Path) -> None:
    """Refuse a ``[train] max_tokens`` that leaves no room for a prompt in the model's context.

    Raises:
        ConfigError: ``max_tokens`` is not smaller than the context length.
    """
    model_config = getattr(policy.serving, "config", None)
    length = context_length(model_config) if isinstance(model_config, PretrainedConfig) else None
    if length is not None and max_tokens >= length:
        raise ConfigError(
            f"[train] max_tokens = {max_tokens} leaves no room for a prompt in the model's "
            f"context of {length} tokens ([model] path = {str(source)!r}); lower max_tokens or "
            "use a model with a longer context"
        )


def policy_tool_parser(local: LocalSettings, policy: PolicyModels) -> str | None:
    """The server's tool-call parser for ``policy`` (see :mod:`fulmen_local.model.tool_format`).

    Raises:
        ConfigError: ``[local] tool_parser`` names no parser.
    """
    model_config = getattr(policy.serving, "config", None)
    model_type = getattr(model_config, "model_type", "")
    return choose_tool_parser(local.tool_parser, str(model_type), policy.tokenizer)
