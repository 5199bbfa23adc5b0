"""The client settings of an episode's openai client, and the credentials of an episode's call
made through a shared one (both shared by the adapters of the package)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fulmen.adapters import MODEL_TIMEOUT_S
from fulmen.context import EpisodeContext

from fulmen_openai._transport import Exchange

__all__ = ["EPISODE_HEADER", "EPISODE_OWNED", "client_options", "scope_to_episode"]

EPISODE_HEADER = "X-Episode-Id"
"""Header naming the episode of a call sent to the gateway's plain ``/v1`` routes."""

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


def scope_to_episode(exchange: Exchange, ctx: EpisodeContext) -> None:
    """Make a call of episode ``ctx`` made through a shared (global) client carry that episode
    and only its capability: ``X-Episode-Id`` and ``Authorization: Bearer <ctx.api_key>``.

    One global client serves every episode of the process, so the only key it can be built
    with on a gateway that checks tokens is the admin token, which opens every route of every
    episode. The runner gives each episode its own token (``ctx.auth_token``, an HMAC of the
    episode id); putting it in place of the client's key keeps the admin token off the episode's
    traffic. Without an episode token (a gateway without ``auth_token``) the client's key is
    left as it is.
    """
    exchange.set_header(EPISODE_HEADER, ctx.episode_id)
    if ctx.auth_token:
        exchange.set_header("Authorization", f"Bearer {ctx.auth_token}")
