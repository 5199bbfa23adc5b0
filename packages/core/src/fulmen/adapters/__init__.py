"""The framework-adapter seam: the base class adapters implement and how they are found.

An adapter hooks one agent framework's own callback or tracing mechanism and sends what only
the framework knows (agent, graph node, run tree, tool results) as
:class:`~fulmen.Annotation` records, joined to the gateway's exact-token transitions by
request id. Adapters live in their own packages (``fulmen-langchain``, ``fulmen-openai``...)
and register under the ``fulmen.adapters`` entry-point group; ``fulmen adapters`` lists them.
"""

from __future__ import annotations

from fulmen.adapters.base import (
    DEFAULT_MODEL,
    MODEL_TIMEOUT_S,
    Adapter,
    AdapterError,
    CallInfo,
    FrameworkRequirement,
    episode_for_response,
)
from fulmen.adapters.discovery import GROUP, AdapterInfo, discover_adapters

__all__ = [
    "DEFAULT_MODEL",
    "GROUP",
    "MODEL_TIMEOUT_S",
    "Adapter",
    "AdapterError",
    "AdapterInfo",
    "CallInfo",
    "FrameworkRequirement",
    "discover_adapters",
    "episode_for_response",
]
