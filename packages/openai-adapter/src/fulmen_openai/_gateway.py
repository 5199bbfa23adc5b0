"""Pointing an OpenAI Agents SDK run at a fulmen episode."""

from __future__ import annotations

import dataclasses
from typing import Any

from agents import RunConfig
from agents.models.openai_chatcompletions import OpenAIChatCompletionsModel
from agents.tracing.setup import get_trace_provider
from fulmen.context import EpisodeContext

from fulmen_openai._agents_adapter import _FulmenTraceProvider
from fulmen_openai._clients import async_episode_client

__all__ = ["gateway_model", "use_gateway"]

DEFAULT_MODEL = "policy"
"""Model name asked of the gateway when none is given (what ``fulmen train`` serves)."""


def gateway_model(
    ctx: EpisodeContext, model: str = DEFAULT_MODEL, **client_kwargs: Any
) -> OpenAIChatCompletionsModel:
    """A chat-completions model whose calls go to the episode (``ctx.base_url``).

    Chat completions, not the Responses API: only chat completions return token ids.
    ``client_kwargs`` go to ``AsyncOpenAI(...)`` (see :func:`fulmen_openai.episode_client`).
    """
    client = async_episode_client(ctx, **client_kwargs)
    return OpenAIChatCompletionsModel(model=model, openai_client=client)


def use_gateway(
    ctx: EpisodeContext,
    *,
    model: str = DEFAULT_MODEL,
    run_config: RunConfig | None = None,
    **client_kwargs: Any,
) -> RunConfig:
    """The ``RunConfig`` that sends every agent of a run to the episode: the one line to add::

        result = await Runner.run(agent, question, run_config=use_gateway(ctx))

    It sets ``RunConfig.model`` (overriding each agent's model: one policy is trained) to
    :func:`gateway_model`. Nothing is traced toward OpenAI: while an
    :class:`~fulmen_openai.AgentsSDKAdapter` is attached its processor is the only one, and
    without one the run's tracing is disabled. Other fields come from ``run_config``.
    """
    base = run_config if run_config is not None else RunConfig()
    captured = isinstance(get_trace_provider(), _FulmenTraceProvider)
    return dataclasses.replace(
        base,
        model=gateway_model(ctx, model, **client_kwargs),
        tracing_disabled=base.tracing_disabled or not captured,
    )
