"""openai clients that send an episode's LLM calls to its gateway URL."""

from __future__ import annotations

from typing import Any

from fulmen.context import EpisodeContext
from openai import AsyncOpenAI, OpenAI

__all__ = ["async_episode_client", "episode_client"]


def _options(ctx: EpisodeContext, kwargs: dict[str, Any]) -> dict[str, Any]:
    # No client-side retries by default: a call the gateway answered late would be recorded
    # twice; the runner retries whole episodes instead. Callers may still pass max_retries.
    return {"base_url": ctx.base_url, "api_key": ctx.api_key, "max_retries": 0, **kwargs}


def episode_client(ctx: EpisodeContext, **kwargs: Any) -> OpenAI:
    """A sync ``OpenAI`` client whose calls go to the episode (``base_url=ctx.base_url``).

    ``kwargs`` go to ``OpenAI(...)`` (``timeout``, ``http_client``...; ``max_retries`` defaults
    to 0). Each episode gets its own client, so calls are attributed by URL: this works from
    any thread or process, unlike the ``X-Episode-Id`` fallback of a shared global client.
    """
    return OpenAI(**_options(ctx, kwargs))


def async_episode_client(ctx: EpisodeContext, **kwargs: Any) -> AsyncOpenAI:
    """The ``AsyncOpenAI`` form of :func:`episode_client`."""
    return AsyncOpenAI(**_options(ctx, kwargs))
