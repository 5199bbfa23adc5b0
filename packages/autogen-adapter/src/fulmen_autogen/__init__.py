"""fulmen adapter for AutoGen AgentChat: agents (inside teams too), tool calls and their
results, joined to the exact-token calls fulmen's gateway records.

One line in the agent process::

    from fulmen_autogen import AutoGenAdapter

    AutoGenAdapter().attach()

and a model client pointed at the episode (``model_client(ctx, "policy")``). See ``README.md``.
"""

from __future__ import annotations

import importlib

try:  # fail early, with an install hint
    importlib.import_module("autogen_agentchat")
    importlib.import_module("autogen_ext.models.openai")
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "fulmen_autogen needs AutoGen AgentChat 0.7 with its OpenAI client: "
        "pip install 'fulmen-autogen' (or 'autogen-agentchat>=0.7,<0.8' "
        "'autogen-ext[openai]>=0.7,<0.8')"
    ) from exc

from fulmen_autogen._adapter import EVENT_LOGGERS, AutoGenAdapter
from fulmen_autogen._client import DEFAULT_MODEL_INFO, model_client

__all__ = ["DEFAULT_MODEL_INFO", "EVENT_LOGGERS", "AutoGenAdapter", "model_client"]
