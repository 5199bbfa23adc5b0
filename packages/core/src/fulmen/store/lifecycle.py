"""The episode life-cycle rules and argument checks of :class:`~fulmen.store.SQLiteStore`.

Kept apart from the SQL so that the rules read in one place: an episode moves
``queued → running → finished`` (succeeded, failed, timed_out, cancelled), never back, and a
finished episode never changes again.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from fulmen.protocol import Episode, EpisodeStatus, TerminationReason
from fulmen.store.base import StoreError

__all__ = ["advance", "as_status", "check_count", "resolve_path"]

RANK = {EpisodeStatus.QUEUED: 0, EpisodeStatus.RUNNING: 1}
"""Life-cycle order of the unfinished states; every finished state ranks 2."""

DEFAULT_TERMINATION = {
    EpisodeStatus.SUCCEEDED: TerminationReason.COMPLETED,
    EpisodeStatus.TIMED_OUT: TerminationReason.TIMEOUT,
    EpisodeStatus.CANCELLED: TerminationReason.CANCELLED,
}


def resolve_path(location: str | os.PathLike[str]) -> Path:
    """A filesystem path from a path or a ``sqlite:///`` URL (SQLAlchemy convention)."""
    text = str(os.fspath(location))
    if text.startswith("sqlite:///"):
        text = text[len("sqlite:///") :]
    if text in ("", ":memory:") or ":" in text.split("/", 1)[0]:
        raise ValueError(
            f"store location {location!r}: expected a file path (the store is shared by threads "
            "and processes), sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    return Path(text).expanduser()


def as_status(status: EpisodeStatus | str) -> EpisodeStatus:
    try:
        return EpisodeStatus(status)
    except ValueError:
        allowed = ", ".join(s.value for s in EpisodeStatus)
        raise ValueError(f"status: expected one of {allowed}, got {status!r}") from None


def check_count(value: int, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:  # pyright: ignore[reportUnnecessaryIsInstance]
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")
    return value


def advance(
    current: Episode,
    status: EpisodeStatus,
    termination: TerminationReason | None,
    error: str | None,
    metadata: dict[str, object] | None,
    now: float,
) -> Episode:
    """The episode after one life-cycle step; raises when the step is not allowed."""
    where = f"episode {current.id!r}"
    if current.status.finished:
        raise StoreError(f"{where} is already {current.status.value} (finished: never changes)")
    if RANK.get(status, 2) < RANK[current.status]:
        raise StoreError(f"{where} cannot go back from {current.status.value} to {status.value}")
    if termination is not None and not status.finished:
        raise ValueError(f"{where}: termination applies only to a finished status, not {status}")
    reason = (termination or DEFAULT_TERMINATION.get(status)) if status.finished else None
    if status.finished and reason is None:
        raise ValueError(f"{where}: pass termination= to say why it failed (agent_error...)")
    return dataclasses.replace(
        current,
        status=status,
        termination=TerminationReason(reason) if reason else None,
        started_at=current.started_at or (now if status is EpisodeStatus.RUNNING else None),
        finished_at=now if status.finished else None,
        error=current.error if error is None else error,
        metadata={**current.metadata, **(metadata or {})},
    )
