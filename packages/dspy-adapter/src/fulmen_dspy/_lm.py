"""The ``dspy.LM`` of one episode (what ``DSPyAdapter.model_for`` returns)."""

from __future__ import annotations

from typing import Any

import dspy
from fulmen.adapters import MODEL_TIMEOUT_S
from fulmen.context import EpisodeContext

__all__ = ["EPISODE_OWNED", "episode_lm"]

EPISODE_OWNED = ("api_base", "api_key", "base_url", "cache")
"""``dspy.LM`` settings the episode owns: its route, its key, and the cache (off)."""


def episode_lm(ctx: EpisodeContext, model: str, **kwargs: Any) -> dspy.LM:
    """The LM :meth:`fulmen_dspy.DSPyAdapter.model_for` returns (see there); the caller has
    checked ``kwargs``."""
    name = model if model.startswith("openai/") else f"openai/{model}"
    options: dict[str, Any] = {"num_retries": 0, "timeout": MODEL_TIMEOUT_S, **kwargs}
    return dspy.LM(name, api_base=ctx.base_url, api_key=ctx.api_key, cache=False, **options)
