"""Watching training: alarms, incremental readers of a run, episode summaries, OTel export.

Everything here is pure or only reads, and needs nothing beyond core's dependencies, except
:mod:`fulmen.observe.otel` (the ``otel`` extra), which is imported only when asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fulmen.observe._optional import MissingDependencyError
from fulmen.observe.alarms import (
    ALARM_KINDS,
    Alarm,
    AlarmMonitor,
    AlarmThresholds,
    check_episodes,
    check_metrics,
    merge_alarms,
)

if TYPE_CHECKING:
    from fulmen.observe.feed import EpisodeFeed, MetricsTail
    from fulmen.observe.summary import AgentStats, EpisodeSummary, agent_stats, summarize

__all__ = [
    "ALARM_KINDS",
    "AgentStats",
    "Alarm",
    "AlarmMonitor",
    "AlarmThresholds",
    "EpisodeFeed",
    "EpisodeSummary",
    "MetricsTail",
    "MissingDependencyError",
    "agent_stats",
    "check_episodes",
    "check_metrics",
    "merge_alarms",
    "summarize",
]

_LAZY = {
    "EpisodeFeed": "feed",
    "MetricsTail": "feed",
    "AgentStats": "summary",
    "EpisodeSummary": "summary",
    "agent_stats": "summary",
    "summarize": "summary",
}


def __getattr__(name: str) -> object:  # lazy: the feed loads the SQLite store on first use
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(f"fulmen.observe.{module}"), name)
