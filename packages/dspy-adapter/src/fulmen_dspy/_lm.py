"""``lm_for``: a ``dspy.LM`` that sends one episode's calls to its gateway route."""

from __future__ import annotations

from typing import Any

import dspy
from fulmen.context import EpisodeContext

__all__ = ["lm_for"]

_RESERVED = ("cache", "api_base", "base_url", "api_key")


def lm_for(ctx: EpisodeContext, model: str, **kwargs: Any) -> dspy.LM:
    """A ``dspy.LM`` for one episode: its calls go to ``ctx.base_url`` with the cache off.

    Use it with ``dspy.context`` around the program call; DSPy copies that setting into the
    worker threads of ``dspy.Parallel`` (and ``dspy.asyncify``), so every branch of the
    program calls the episode's route::

        with dspy.context(lm=fulmen_dspy.lm_for(ctx, "policy")):
            prediction = program(question=task.data["question"])

    Args:
        ctx: the episode's context (given to the agent by fulmen's runner).
        model: the served model name (``"policy"``); ``openai/`` is prefixed when missing, so
            DSPy speaks the OpenAI chat-completions protocol the gateway serves.
        **kwargs: anything else ``dspy.LM`` takes (``temperature``, ``max_tokens``...).
            ``extra_body`` works but makes DSPy use LiteLLM instead of its built-in client.

    Returns:
        A new ``dspy.LM`` with ``cache=False``: a cached answer never reaches the gateway,
        so it would be neither recorded nor trained on.

    Raises:
        ValueError: ``kwargs`` sets ``cache``, ``api_base``, ``base_url`` or ``api_key``
            (they are the episode's to set).
    """
    clashes = sorted(key for key in _RESERVED if key in kwargs)
    if clashes:
        raise ValueError(
            f"lm_for() sets {', '.join(clashes)} itself (the episode's route, cache off); "
            "remove them, or build dspy.LM yourself with cache=False and api_base=ctx.base_url"
        )
    name = model if model.startswith("openai/") else f"openai/{model}"
    return dspy.LM(name, api_base=ctx.base_url, api_key=ctx.api_key, cache=False, **kwargs)
