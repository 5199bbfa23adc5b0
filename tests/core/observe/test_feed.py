"""Incremental readers: ``metrics.jsonl`` tailing (partial lines, rewrites) and the finished-
episode feed on real store files, also while another process writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _observe_data import add_failed_episode, add_tool_episode
from fulmen.observe.feed import EpisodeFeed, MetricsTail
from fulmen.protocol import Episode, EpisodeStatus, Task
from fulmen.store.sqlite import SQLiteStore

HERE = Path(__file__).resolve().parent


def test_metrics_tail_waits_for_a_partial_line_and_skips_garbage(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    tail = MetricsTail(path)
    assert tail.poll() == []  # no file yet
    with path.open("w") as f:
        f.write('{"kind": "train", "step": 1}\n{"kind": "train", "st')
    assert tail.poll() == [{"kind": "train", "step": 1}]
    assert tail.poll() == []
    with path.open("a") as f:
        f.write('ep": 2, "text": "ü"}\nnot json\n[1, 2]\n')
    assert tail.poll() == [{"kind": "train", "step": 2, "text": "ü"}]
    assert tail.skipped == 2
    path.write_text('{"kind": "eval", "step": 0}\n')  # rewritten (shorter): read from the start
    assert tail.poll() == [{"kind": "eval", "step": 0}]


def test_finished_episodes_query_orders_by_finish_time(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "s.db") as store:
        first = add_tool_episode(store, "a")
        store.add_episode(Episode(id="running", task=Task(id="t")))
        store.update_episode("running", status=EpisodeStatus.RUNNING)
        second = add_failed_episode(store, "b")
        third = add_tool_episode(store, "c")
        assert [e.id for e in store.finished_episodes()] == ["a", "b", "c"]
        assert [e.id for e in store.finished_episodes(after=first.finished_at or 0)] == ["b", "c"]
        assert [e.id for e in store.finished_episodes(limit=2)] == ["a", "b"]
        assert [e.id for e in store.finished_episodes(limit=2, newest=True)] == ["b", "c"]
        assert store.finished_episodes(after=third.finished_at or 0) == []
        assert second.status is EpisodeStatus.FAILED


class _PlainStore:
    """Any ``Store`` other than SQLite (here delegating to one): the feed's generic path."""

    def __init__(self, inner: SQLiteStore) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


def _ids(feed: EpisodeFeed) -> list[str]:
    return [r.episode.id for r in feed.poll()]


def test_the_feed_returns_a_backlog_then_each_new_episode_once(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "s.db") as store:
        for i in range(5):
            add_tool_episode(store, f"old-{i}")
        feeds = [EpisodeFeed(store, backlog=3), EpisodeFeed(_PlainStore(store), backlog=3)]  # type: ignore[arg-type]
        for feed in feeds:
            assert _ids(feed) == ["old-2", "old-3", "old-4"]
            assert _ids(feed) == []
        store.add_episode(Episode(id="slow", task=Task(id="t")))
        store.update_episode("slow", status=EpisodeStatus.RUNNING)
        add_tool_episode(store, "new-0")
        for feed in feeds:
            [record] = feed.poll()
            assert record.episode.id == "new-0"
            # adapter annotations are merged into the records the feed returns
            assert record.transitions[0].agent == "planner"
            assert record.transitions[0].metadata["tool_results"][0]["output"] == "42"
            assert [r.value for r in record.rewards] == [1.0, 0.5, 0.25]
        store.update_episode("slow", status=EpisodeStatus.SUCCEEDED)
        for feed in feeds:
            assert _ids(feed) == ["slow"]
            assert _ids(feed) == []
        assert len(EpisodeFeed(store, backlog=None).poll()) == 7
        assert len(EpisodeFeed(_PlainStore(store), backlog=50).poll()) == 7  # type: ignore[arg-type]
        assert len(EpisodeFeed(store, backlog=50).poll()) == 7
        only_new = EpisodeFeed(store, backlog=0)
        assert _ids(only_new) == []
        add_tool_episode(store, "new-1")
        assert _ids(only_new) == ["new-1"]


def test_the_feed_follows_a_store_another_process_writes(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    SQLiteStore(db).close()
    script = (
        "import sys, time\n"
        "from _observe_data import add_tool_episode\n"
        "from fulmen.store.sqlite import SQLiteStore\n"
        "store = SQLiteStore(sys.argv[1])\n"
        "for i in range(40):\n"
        "    add_tool_episode(store, f'ep-{i:02d}')\n"
        "    time.sleep(0.01)\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    writer = subprocess.Popen([sys.executable, "-c", script, str(db)], env=env)
    seen: list[str] = []
    with SQLiteStore(db) as store:
        feed = EpisodeFeed(store, backlog=None, slack_s=5.0)
        deadline = time.monotonic() + 60
        while len(seen) < 40 and time.monotonic() < deadline:
            seen += _ids(feed)
            time.sleep(0.05)
        assert writer.wait(timeout=60) == 0
        seen += _ids(feed)
    assert seen == [f"ep-{i:02d}" for i in range(40)]  # each once, in finish order


def test_metrics_rows_written_by_json_dumps_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    rows = [{"kind": "train", "step": s, "batch/groups": 4, "entropy": 0.5 / s} for s in (1, 2, 3)]
    tail = MetricsTail(path)
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
            f.flush()
            assert tail.poll() == [row]
