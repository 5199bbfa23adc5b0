"""Everything the dashboard's JSON endpoints return, read from a run directory or a store.

:class:`DashboardData` wraps a :class:`~fulmen.observe.state.RunState` (the same incremental
readers as ``fulmen watch``: ``metrics.jsonl`` and the store, only read) and answers each
endpoint with plain JSON-ready values. Its methods block (SQLite reads) and are not
thread-safe: the server calls them from one worker thread.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fulmen.observe._optional import MissingDependencyError
from fulmen.observe.alarms import AlarmThresholds
from fulmen.observe.dashboard.compare import compare_options, pick_episode
from fulmen.observe.dashboard.credit import CreditReplay, CreditSource
from fulmen.observe.dashboard.curves import curves_json
from fulmen.observe.dashboard.episode import episode_detail
from fulmen.observe.dashboard.episodes import EpisodeFilter, episode_list
from fulmen.observe.dashboard.tokens import TokenText, find_tokenizer
from fulmen.observe.per_policy import policy_views
from fulmen.observe.state import STEP_METRICS, RunState, metric_value
from fulmen.observe.summary import agent_stats
from fulmen.store.base import EpisodeNotFound

__all__ = ["DashboardData", "EpisodeNotFound"]

_log = logging.getLogger("fulmen.dashboard")
_TOKENIZER_LOOK_S = 5.0


def _json_number(value: Any) -> Any:
    """``value``, or None for a non-finite float (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class DashboardData:
    """The dashboard's view of one run (or one gateway store).

    Args:
        store_path: The store file (it may not exist yet: the run is starting).
        run_dir: The run directory (its ``metrics.jsonl``); None when watching a store only.
        thresholds: Alarm thresholds.
        credit: The credit assigner replayed to show which calls train (default: ``grpo``).
        tokens: Decodes token ids for the token viewer (None: ids only, or see below).
        find_tokens: With ``tokens`` None and a ``run_dir``: use the ``tokenizer.json`` of the
            run's newest checkpoint (:func:`~fulmen.observe.dashboard.tokens.find_tokenizer`),
            looking again every few seconds until the first checkpoint is written.
        min_refresh_s: Reads of the files are at most this often (each endpoint refreshes).
    """

    def __init__(
        self,
        *,
        store_path: Path,
        run_dir: Path | None = None,
        thresholds: AlarmThresholds | None = None,
        credit: CreditSource | None = None,
        tokens: TokenText | None = None,
        find_tokens: bool = False,
        min_refresh_s: float = 0.5,
    ) -> None:
        self.run_dir = run_dir
        self.store_path = store_path
        self._state = RunState(
            metrics_path=run_dir / "metrics.jsonl" if run_dir is not None else None,
            store_path=store_path,
            thresholds=thresholds or AlarmThresholds(),
            window=None,
        )
        self._credit = CreditReplay(credit or CreditSource.default())
        self._tokens = tokens
        self._find_tokens = find_tokens and tokens is None and run_dir is not None
        self._looked_for_tokens = -math.inf
        self._min_refresh = float(min_refresh_s)
        self._refreshed = -math.inf

    def refresh(self, *, force: bool = False) -> None:
        """Read what is new, unless the last read was under ``min_refresh_s`` ago."""
        now = time.monotonic()
        if force or now - self._refreshed >= self._min_refresh:
            self._state.refresh()
            self._refreshed = now

    def _token_text(self) -> TokenText | None:
        """The tokenizer, looked for in the run's checkpoints while there is none yet."""
        now = time.monotonic()
        due = now - self._looked_for_tokens >= _TOKENIZER_LOOK_S
        if self._find_tokens and self.run_dir is not None and due:
            self._looked_for_tokens = now
            path = find_tokenizer(self.run_dir)
            if path is not None:
                self._find_tokens = False
                try:
                    self._tokens = TokenText(path)
                except (FileNotFoundError, ValueError, MissingDependencyError) as exc:
                    _log.warning("token viewer: ids only (%s)", exc)
        return self._tokens

    def summary(self) -> dict[str, Any]:
        """The header and overview: source, step, episode counts, step metrics, agents, policies
        (:func:`~fulmen.observe.per_policy.policy_views`: empty without ``[[policy]]``), alarms."""
        self.refresh()
        st = self._state
        row: dict[str, Any] = dict(st.train_rows[-1]) if st.train_rows else {}
        if st.last_eval is not None and "eval_success_rate" not in row:
            row["eval_success_rate"] = st.last_eval.get("success_rate")
        metrics = [
            {"label": label, "value": _json_number(metric_value(row, keys))}
            for label, keys in STEP_METRICS
            if metric_value(row, keys) is not None
        ]
        agents = [
            {**asdict(a), "tool_call_rate": a.tool_call_rate} for a in agent_stats(st.summaries)
        ]
        statuses = Counter(s.status for s in st.summaries)
        return {
            "source": str(self.run_dir if self.run_dir is not None else self.store_path),
            "run_dir": None if self.run_dir is None else str(self.run_dir),
            "store": str(self.store_path),
            "store_exists": st.store is not None,
            "step": row.get("step"),
            "finished": st.finished,
            "running": st.running,
            "failed_calls": st.failed_calls,
            "statuses": dict(statuses),
            "step_metrics": metrics,
            "agents": agents,
            "policies": [asdict(p) for p in policy_views(st.train_rows, st.summaries)],
            "alarms": [asdict(a) for a in st.alarms()],
            "credit": {"origin": self._credit.source.origin, "agents": self._credit.source.agents},
            "tokenizer": None if (tokens := self._token_text()) is None else str(tokens.path),
            "updated_at": st.updated_at,
        }

    def curves(self) -> dict[str, Any]:
        """The training curves (:func:`~fulmen.observe.dashboard.curves.curves_json`)."""
        self.refresh()
        return curves_json(self._state.train_rows, self._state.eval_rows)

    def episodes(self, flt: EpisodeFilter) -> dict[str, Any]:
        """One page of the episode list (:func:`~fulmen.observe.dashboard.episodes.episode_list`)."""
        self.refresh()
        return episode_list(list(self._state.summaries), flt)

    def episode(self, episode_id: str) -> dict[str, Any]:
        """The episode page (:func:`~fulmen.observe.dashboard.episode.episode_detail`).

        Raises:
            EpisodeNotFound: no such episode (or no store yet).
        """
        store = self._state.store
        if store is None:
            self.refresh(force=True)
            store = self._state.store
        if store is None:
            raise EpisodeNotFound(episode_id)
        record = store.record(episode_id)
        credit = self._credit.episode(store, record.episode)
        return episode_detail(record, credit, self._token_text())

    def compare_options(self) -> dict[str, Any]:
        """Held-out tasks and the policy versions each was evaluated with."""
        self.refresh()
        return compare_options(list(self._state.summaries))

    def compare(self, task_id: str, a: int, b: int) -> dict[str, Any]:
        """The held-out episodes of ``task_id`` under policy versions ``a`` and ``b``.

        Returns ``{"task_id", "a", "b"}``, each side ``{"version", "episode"}`` with the episode
        page, or None when that version has no finished evaluation of the task.
        """
        self.refresh()
        summaries = list(self._state.summaries)
        sides: dict[str, Any] = {"task_id": task_id}
        for name, version in (("a", a), ("b", b)):
            found = pick_episode(summaries, task_id, version)
            detail = self.episode(found.episode_id) if found is not None else None
            sides[name] = {"version": version, "episode": detail}
        return sides

    def close(self) -> None:
        """Close the store."""
        self._state.close()
