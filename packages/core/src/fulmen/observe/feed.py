"""Incremental readers of a run: new lines of ``metrics.jsonl`` and newly finished episodes.

Both are polled (``poll()``) by one thread, never block for long, and only read: a watcher can
follow a run another process is writing.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fulmen.protocol import Episode, EpisodeRecord
from fulmen.store.base import Store
from fulmen.store.sqlite import SQLiteStore

__all__ = ["EpisodeFeed", "MetricsTail"]

logger = logging.getLogger(__name__)


class MetricsTail:
    """Follows a ``metrics.jsonl``: each :meth:`poll` returns the rows appended since the last.

    A partial last line (a writer mid-write, or a crash) is kept until its newline arrives; a
    complete line that is not a JSON object is skipped (counted in :attr:`skipped`). A file
    that shrank (rewritten) is read again from the start; a missing file yields nothing.

    Args:
        path: The ``metrics.jsonl`` file (it may not exist yet).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.skipped = 0
        """Complete lines that were not JSON objects."""
        self._offset = 0
        self._partial = b""

    def poll(self) -> list[dict[str, Any]]:
        """Rows completed since the last call, in file order."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return []
        if size < self._offset:  # truncated or replaced: start over
            self._offset, self._partial = 0, b""
        if size == self._offset:
            return []
        with self.path.open("rb") as f:
            f.seek(self._offset)
            data = f.read(size - self._offset)
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        rows: list[dict[str, Any]] = []
        for line in lines:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                row = None
            if isinstance(row, dict):
                rows.append(row)
            else:
                self.skipped += 1
                logger.debug("skipping a line of %s that is not a JSON object", self.path)
        return rows


class EpisodeFeed:
    """Follows a store: each :meth:`poll` returns the records of episodes finished since.

    The first poll returns the last ``backlog`` finished episodes (all of them when None), later
    polls every episode finished since, each exactly once, ordered by finish time. Episodes
    are re-queried ``slack_s`` seconds back, so one whose finish committed slightly out of
    order (another process) is not missed.

    On an :class:`~fulmen.store.sqlite.SQLiteStore` it asks only for the new episodes; on any
    other :class:`~fulmen.store.base.Store` it lists every episode each poll (fine for small
    stores and tests). Not thread-safe.

    Args:
        store: The store to follow (only read).
        backlog: Finished episodes returned by the first poll (None: all).
        slack_s: How far back each poll looks again.
    """

    def __init__(self, store: Store, *, backlog: int | None = 50, slack_s: float = 5.0) -> None:
        if backlog is not None and backlog < 0:
            raise ValueError(f"backlog: expected None or an int >= 0, got {backlog!r}")
        self._store = store
        self._backlog = backlog
        self._slack = float(slack_s)
        self._watermark: float | None = None
        self._seen: dict[str, float] = {}

    def poll(self) -> list[EpisodeRecord]:
        """Records of the episodes finished since the last poll (see the class docstring)."""
        if self._watermark is None:
            return self._records(self._first_poll())
        episodes = self._finished(self._watermark - self._slack, None, newest=False)
        fresh = [e for e in episodes if e.id not in self._seen]
        self._remember(fresh)
        return self._records(fresh)

    def _first_poll(self) -> list[Episode]:
        """The backlog; everything finished up to it counts as seen."""
        limit = None if self._backlog is None else max(self._backlog, 1)
        latest = self._finished(0.0, limit, newest=True)
        self._watermark = 0.0
        shown = latest if self._backlog is None else latest[max(len(latest) - self._backlog, 0) :]
        if latest:  # older episodes inside the slack window must not come back later
            newest = latest[-1].finished_at or 0.0
            self._remember(self._finished(newest - self._slack, None, newest=False))
        return shown

    def _remember(self, episodes: Sequence[Episode]) -> None:
        for e in episodes:
            finished = e.finished_at or 0.0
            self._seen[e.id] = finished
            self._watermark = max(self._watermark or 0.0, finished)
        floor = (self._watermark or 0.0) - self._slack
        self._seen = {k: v for k, v in self._seen.items() if v > floor}

    def _finished(self, after: float, limit: int | None, *, newest: bool) -> list[Episode]:
        if isinstance(self._store, SQLiteStore):
            return self._store.finished_episodes(after=after, limit=limit, newest=newest)
        done = [
            e
            for e in self._store.list_episodes()
            if e.status.finished and (e.finished_at or 0.0) > after
        ]
        done.sort(key=lambda e: (e.finished_at or 0.0, e.id))
        if limit is None:
            return done
        return done[max(len(done) - limit, 0) :] if newest else done[:limit]

    def _records(self, episodes: Sequence[Episode], chunk: int = 200) -> list[EpisodeRecord]:
        out: list[EpisodeRecord] = []
        for i in range(0, len(episodes), chunk):
            out.extend(self._store.records([e.id for e in episodes[i : i + chunk]]))
        return out
