"""fulmen: train existing LLM agents with reinforcement learning.

The public API. Light at import time (no aiohttp, numpy, torch or agent framework is loaded by
``import fulmen``); heavier pieces load on first attribute access.

Data flows one way: agent → gateway → store → credit → batch → backend → new weights → server.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from fulmen.context import (
    EpisodeContext,
    NoEpisodeError,
    RewardError,
    current_episode,
    current_step,
    episode_scope,
    reward,
    step_scope,
)
from fulmen.protocol import (
    SCHEMA_VERSION,
    Annotation,
    Episode,
    EpisodeRecord,
    EpisodeStatus,
    ProtocolError,
    Reward,
    Task,
    TerminationReason,
    Transition,
)

if TYPE_CHECKING:
    from fulmen.gateway import Gateway, RemoteGateway
    from fulmen.rows import TrainingRow
    from fulmen.runner import EpisodeResult, Runner
    from fulmen.store import SQLiteStore, Store, open_store

__version__ = "0.1.0"

__all__ = [
    "SCHEMA_VERSION",
    "Annotation",
    "Episode",
    "EpisodeContext",
    "EpisodeRecord",
    "EpisodeResult",
    "EpisodeStatus",
    "Gateway",
    "NoEpisodeError",
    "ProtocolError",
    "RemoteGateway",
    "Reward",
    "RewardError",
    "Runner",
    "SQLiteStore",
    "Store",
    "Task",
    "TerminationReason",
    "TrainingRow",
    "Transition",
    "current_episode",
    "current_step",
    "episode_scope",
    "open_store",
    "reward",
    "step_scope",
]

_LAZY = {
    "Gateway": "fulmen.gateway",
    "RemoteGateway": "fulmen.gateway",
    "Runner": "fulmen.runner",
    "EpisodeResult": "fulmen.runner",
    "SQLiteStore": "fulmen.store",
    "Store": "fulmen.store",
    "open_store": "fulmen.store",
    "TrainingRow": "fulmen.rows",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fulmen' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
