"""Filters used by every assigner: failed episodes, agent selection, groups without signal.

Each filter is a pure function; the assigners count what they remove (see
:mod:`fulmen.credit.base`). The over-long-sequence filter works on rows and lives in
:mod:`fulmen.batch.overlong`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from fulmen.protocol import Episode, EpisodeStatus, TerminationReason

__all__ = ["NO_SIGNAL_TOLERANCE", "failure_reason", "has_signal", "select_agent"]

NO_SIGNAL_TOLERANCE = 1e-9
"""Scores whose spread (max - min) is at most this are "all equal": the group has no signal."""


def failure_reason(episode: Episode) -> str | None:
    """Why an episode must not be scored, or None when it is usable.

    Usable means ``status == succeeded`` and ``termination == completed``; everything else is
    excluded from every statistic (never scored 0). The reason is the termination reason when
    one is recorded (``timeout``, ``agent_error``, ``upstream_error``, ``cancelled``,
    ``crashed``), else the status (``failed``, ``timed_out``, ``running``...), or
    ``no_termination`` for a succeeded episode without one.
    """
    if episode.status is EpisodeStatus.SUCCEEDED and episode.termination is TerminationReason.COMPLETED:
        return None
    if episode.termination is not None and episode.termination is not TerminationReason.COMPLETED:
        return episode.termination.value
    if episode.status is not EpisodeStatus.SUCCEEDED:
        return episode.status.value
    return "no_termination"


def select_agent(selector: Sequence[str] | Callable[[str | None], bool] | None, agent: str | None) -> bool:
    """True when ``agent`` trains under ``selector`` (None selects every agent).

    A list of names never selects calls whose agent is None; use a predicate for that.
    """
    if selector is None:
        return True
    if callable(selector):
        return bool(selector(agent))
    return agent is not None and agent in selector


def has_signal(scores: Sequence[float]) -> bool:
    """True when the scores are not all equal (spread above :data:`NO_SIGNAL_TOLERANCE`).

    A single score has no signal: there is nothing to compare it with.
    """
    if len(scores) < 2:
        return False
    return max(scores) - min(scores) > NO_SIGNAL_TOLERANCE
