"""The client settings of an episode's openai client (shared by both adapters of the package)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fulmen.adapters import MODEL_TIMEOUT_S
from fulmen.context import EpisodeContext

__all__ = ["EPISODE_OWNED", "client_options"]

EPISODE_OWNED = ("api_key", "base_url")
"""``OpenAI(...)`` settings the episode owns."""


def client_options(ctx: EpisodeContext, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``OpenAI(...)`` / ``AsyncOpenAI(...)`` arguments for the episode: its URL and key, no
    client-side retries (a call the gateway answered late would be recorded twice; the runner
    retries whole episodes) and a timeout of :data:`~fulmen.adapters.MODEL_TIMEOUT_S`, unless
    ``kwargs`` (the caller's, already checked against :data:`EPISODE_OWNED`) set them."""
    return {
        "max_retries": 0,
        "timeout": MODEL_TIMEOUT_S,
        **kwargs,
        "base_url": ctx.base_url,
        "api_key": ctx.api_key,
    }
