"""The episode list: filters over finished episodes' summaries, parsed from a query string."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fulmen.errors import FulmenError
from fulmen.observe.dashboard.episode import summary_json
from fulmen.observe.summary import EpisodeSummary
from fulmen.protocol import EpisodeStatus

__all__ = ["MAX_LIMIT", "EpisodeFilter", "FilterError", "episode_list"]

MAX_LIMIT = 500
"""Most episodes one page of the list returns."""

_STATUSES = tuple(s.value for s in EpisodeStatus if s.finished)


class FilterError(FulmenError, ValueError):
    """A filter value is malformed; the message names the parameter and what it expects."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EpisodeFilter:
    """Which finished episodes the list shows. Every set field must match."""

    task: str | None = None
    """Substring of the task id (case-insensitive)."""
    agent: str | None = None
    """An agent that made at least one call (``(unnamed)`` for calls without one)."""
    status: str | None = None
    """``succeeded``, ``failed``, ``timed_out`` or ``cancelled``."""
    split: str | None = None
    """The task's split (``train``, ``eval``...)."""
    min_reward: float | None = None
    """Lowest outcome reward (episodes without one never match a reward bound)."""
    max_reward: float | None = None
    """Highest outcome reward."""
    limit: int = 50
    """Episodes per page (1 to :data:`MAX_LIMIT`), newest first."""
    offset: int = 0
    """Episodes skipped (newest first)."""

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> EpisodeFilter:
        """Parse ``task``, ``agent``, ``status``, ``split``, ``min_reward``, ``max_reward``,
        ``limit`` and ``offset`` (empty values mean unset; other keys are ignored).

        Raises:
            FilterError: an unknown status, a reward that is not a finite number, a range whose
                minimum exceeds its maximum, or a limit/offset out of range.
        """

        def text(name: str) -> str | None:
            value = query.get(name, "").strip()
            return value or None

        def number(name: str) -> float | None:
            raw = text(name)
            if raw is None:
                return None
            try:
                value = float(raw)
            except ValueError:
                raise FilterError(f"{name}: expected a number, got {raw!r}") from None
            if not math.isfinite(value):
                raise FilterError(f"{name}: expected a finite number, got {raw!r}")
            return value

        def count(name: str, default: int, low: int, high: int | None) -> int:
            raw = text(name)
            if raw is None:
                return default
            try:
                value = int(raw)
            except ValueError:
                raise FilterError(f"{name}: expected an integer, got {raw!r}") from None
            if value < low or (high is not None and value > high):
                bound = f"{low}..{high}" if high is not None else f">= {low}"
                raise FilterError(f"{name}: expected an integer {bound}, got {value}")
            return value

        status = text("status")
        if status is not None and status not in _STATUSES:
            raise FilterError(f"status: expected one of {', '.join(_STATUSES)}, got {status!r}")
        low, high = number("min_reward"), number("max_reward")
        if low is not None and high is not None and low > high:
            raise FilterError(f"min_reward {low:g} is above max_reward {high:g}")
        return cls(
            task=text("task"),
            agent=text("agent"),
            status=status,
            split=text("split"),
            min_reward=low,
            max_reward=high,
            limit=count("limit", 50, 1, MAX_LIMIT),
            offset=count("offset", 0, 0, None),
        )

    def matches(self, s: EpisodeSummary) -> bool:
        """True when ``s`` passes every set filter."""
        if self.task is not None and self.task.lower() not in s.task_id.lower():
            return False
        if self.agent is not None and self.agent not in s.agents:
            return False
        if self.status is not None and s.status != self.status:
            return False
        if self.split is not None and s.split != self.split:
            return False
        if self.min_reward is not None or self.max_reward is not None:
            if s.outcome is None:
                return False
            if self.min_reward is not None and s.outcome < self.min_reward:
                return False
            if self.max_reward is not None and s.outcome > self.max_reward:
                return False
        return True


def _facet(values: Iterable[str]) -> list[str]:
    return sorted(set(values))


def episode_list(summaries: Sequence[EpisodeSummary], flt: EpisodeFilter) -> dict[str, Any]:
    """One page of the list: ``{"total", "matching", "offset", "episodes", "facets"}``.

    ``summaries`` are in finish order; the page is newest first. ``total`` counts every
    finished episode, ``matching`` those that pass ``flt``; ``facets`` lists the agents,
    statuses and splits present (for the filter menus).
    """
    matching = [s for s in reversed(summaries) if flt.matches(s)]
    page = matching[flt.offset : flt.offset + flt.limit]
    return {
        "total": len(summaries),
        "matching": len(matching),
        "offset": flt.offset,
        "episodes": [summary_json(s) for s in page],
        "facets": {
            "agents": _facet(a for s in summaries for a in s.agents),
            "statuses": _facet(s.status for s in summaries),
            "splits": _facet(s.split for s in summaries),
        },
    }
