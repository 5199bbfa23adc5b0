"""What a watcher knows about a run, refreshed by polling its files: shared by ``fulmen watch``
and ``fulmen dashboard``.

:class:`RunState` follows a run's ``metrics.jsonl`` (:class:`~fulmen.observe.feed.MetricsTail`)
and its store (:class:`~fulmen.observe.feed.EpisodeFeed`), keeps the training and evaluation
rows, one :class:`~fulmen.observe.summary.EpisodeSummary` per finished episode and the current
alarms. It only reads: it can follow a run another process is writing. :data:`METRICS` names
each metric once with its key in the metrics schema (:mod:`fulmen.train.schema`), which every
backend writes.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fulmen.observe.alarms import (
    Alarm,
    AlarmThresholds,
    check_episodes,
    check_metrics,
    merge_alarms,
)
from fulmen.observe.feed import EpisodeFeed, MetricsTail
from fulmen.observe.summary import EpisodeSummary, summarize
from fulmen.protocol import Episode, EpisodeStatus
from fulmen.store.sqlite import SQLiteStore

__all__ = ["METRICS", "STEP_METRICS", "RunState", "metric_value"]

METRICS: Mapping[str, str] = {
    "reward": "reward_mean",
    "reward_std": "reward_std",
    "success": "success_rate",
    "held_out": "eval_success_rate",
    "tool_call_rate": "tool_call_rate",
    "entropy": "entropy",
    "kl": "kl",
    "clip_fraction": "clip_fraction",
    "grad_norm": "grad_norm",
    "episodes": "episodes",
    "infra_failed": "infra_failed_episodes",
    "no_signal_groups": "no_signal_groups",
    "dropped_groups": "dropped_groups",
    "drift_breaks": "drift_breaks",
    "prefix_break_rate": "drift/prefix_break_rate",
    "render_mismatch_rate": "drift/render_mismatch_rate",
    "logprob_drift": "drift/logprob_abs_diff_mean",
    "logprob_drift_max": "drift/logprob_abs_diff_max",
    "logprob_k3": "drift/logprob_k3",
    "rollout_tokens_per_s": "rollout_tokens_per_s",
    "train_tokens_per_s": "train_tokens_per_s",
    "step_s": "step_s",
}
"""Each metric by name, with its ``metrics.jsonl`` key (:mod:`fulmen.train.schema`: one name
for every backend)."""

STEP_METRICS: tuple[tuple[str, str], ...] = tuple(
    (label, METRICS[name])
    for label, name in (
        ("reward", "reward"),
        ("reward std", "reward_std"),
        ("success", "success"),
        ("held-out", "held_out"),
        ("tools / call", "tool_call_rate"),
        ("entropy", "entropy"),
        ("kl", "kl"),
        ("clip fraction", "clip_fraction"),
        ("grad norm", "grad_norm"),
        ("episodes", "episodes"),
        ("failed (infra)", "infra_failed"),
        ("no-signal groups", "no_signal_groups"),
        ("drift breaks", "drift_breaks"),
        ("prefix breaks", "prefix_break_rate"),
        ("re-render diff", "render_mismatch_rate"),
        ("logprob |Δ|", "logprob_drift"),
        ("logprob k3", "logprob_k3"),
        ("rollout tok/s", "rollout_tokens_per_s"),
        ("train tok/s", "train_tokens_per_s"),
        ("step s", "step_s"),
    )
)
"""The current step's panel: label and the metric key it reads."""


def metric_value(row: Mapping[str, Any], key: str) -> Any:
    """``row[key]``, or None when the row does not have it."""
    return row.get(key)


class RunState:
    """What a watcher shows, refreshed by polling the run's files (only read). Not thread-safe.

    Args:
        metrics_path: The run's ``metrics.jsonl`` (None: watching a store only).
        store_path: The store file (opened once it exists).
        thresholds: Alarm thresholds.
        window: Finished episodes kept as summaries, the most recent (None: every one). The
            episode-based alarms look at the last ``window`` (``thresholds.episode_window``
            when None).
    """

    def __init__(
        self,
        *,
        metrics_path: Path | None,
        store_path: Path,
        thresholds: AlarmThresholds,
        window: int | None = 200,
    ) -> None:
        if window is not None and window < 1:
            raise ValueError(f"window: expected None or an int >= 1, got {window!r}")
        self.metrics_path = metrics_path
        self.store_path = store_path
        self.thresholds = thresholds
        self._tail = MetricsTail(metrics_path) if metrics_path is not None else None
        self._store: SQLiteStore | None = None
        self._feed: EpisodeFeed | None = None
        self._window = window
        self.train_rows: list[dict[str, Any]] = []
        """Every ``train`` row (rows without ``kind`` count as train), in file order."""
        self.eval_rows: list[dict[str, Any]] = []
        """Every ``eval`` row, in file order."""
        self.summaries: deque[EpisodeSummary] = deque(maxlen=window)
        """Finished episodes, in finish order (the last ``window``)."""
        self.episodes: deque[Episode] = deque(
            maxlen=window if window is not None else max(int(thresholds.episode_window), 1)
        )
        self.finished = 0
        """Finished episodes seen (including those out of the window)."""
        self.running = 0
        self.failed_calls: dict[str, int] = {}
        """LLM calls the upstream did not complete, by HTTP status or reason (``"429"``...)."""
        self.updated_at = 0.0

    @property
    def last_eval(self) -> dict[str, Any] | None:
        """The latest ``eval`` row (None before the first)."""
        return self.eval_rows[-1] if self.eval_rows else None

    @property
    def store(self) -> SQLiteStore | None:
        """The store, once its file exists (None before)."""
        return self._store

    def refresh(self) -> None:
        """Read what is new in the metrics file and the store."""
        if self._tail is not None:
            for row in self._tail.poll():
                kind = row.get("kind", "train")
                if kind == "train":
                    self.train_rows.append(row)
                elif kind == "eval":
                    self.eval_rows.append(row)
        if self._store is None and self.store_path.exists():
            self._store = SQLiteStore(self.store_path)
            self._feed = EpisodeFeed(self._store, backlog=self._window)
        if self._store is not None and self._feed is not None:
            for record in self._feed.poll():
                self.summaries.append(summarize(record))
                self.episodes.append(record.episode)
                self.finished += 1
            self.running = len(self._store.list_episodes(status=EpisodeStatus.RUNNING))
            self.failed_calls = self._store.failed_call_counts()
        self.updated_at = time.time()

    def alarms(self) -> list[Alarm]:
        """The current alarms (metrics-based and episode-based, one per kind)."""
        return merge_alarms(
            check_metrics(self.train_rows, self.thresholds),
            check_episodes(list(self.episodes), self.thresholds),
        )

    def close(self) -> None:
        """Close the store."""
        if self._store is not None:
            self._store.close()
            self._store = None
