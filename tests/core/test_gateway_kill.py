"""``kill -9`` of the gateway under load leaves 0 lost acknowledged calls, 0 altered and 0
partial calls (issue 18's durability check, bounded for CI: a few kills in seconds; the long
run is ``benchmarks/gateway_kill.py``).

Real processes: the gateway (``python -m fulmen.cli gateway``) killed with SIGKILL and started
again on the same port and store, the vLLM wire-format double as the upstream, 16 aiohttp
workers sending chat calls (``n`` 1-4, a quarter streamed); the store read with its own
connection after every restart (:mod:`fulmen_testkit.kill_load`).
"""

from __future__ import annotations

from pathlib import Path

from fulmen.protocol import Episode, EpisodeStatus, Task, Transition
from fulmen.store.sqlite import SQLiteStore
from fulmen_testkit.kill_load import MARK, Ack, KillReport, check_store, kill_under_load


def test_kill_9_under_load_loses_and_splits_nothing(tmp_path: Path) -> None:
    report = kill_under_load(tmp_path / "s.db", kills=2, seconds_between=(0.5, 1.0), seed=1)
    print(report)
    assert report.kills == 2 and report.checks == 3
    assert (report.lost, report.altered, report.partial) == (0, 0, 0), report.problems
    assert report.acknowledged >= 50  # the load really ran on both sides of every kill
    assert report.stored_calls >= report.acknowledged


def _choice(request_id: str, seq: int, index: int, n: int, text: str) -> Transition:
    return Transition(
        episode_id="ep",
        seq=seq,
        request_id=request_id,
        request_messages=({"role": "user", "content": f"{MARK} w0 c{seq} n={n}"},),
        response_message={"role": "assistant", "content": text},
        finish_reason="stop",
        metadata={"choice_index": index},
    )


def test_the_check_finds_lost_altered_and_partial_calls(tmp_path: Path) -> None:
    store_path = tmp_path / "s.db"
    with SQLiteStore(store_path) as store:
        store.add_episode(Episode(id="ep", task=Task(id="t")))
        store.update_episode("ep", status=EpisodeStatus.RUNNING)
        store.add_transitions([_choice("ep.0", 0, 0, 2, "a"), _choice("ep.0", 1, 1, 2, "b")])
        store.add_transitions([_choice("ep.2", 2, 0, 3, "c"), _choice("ep.2", 3, 1, 3, "d")])
        store.add_transitions([_choice("ep.4", 4, 0, 1, "e")])
    acks = [
        Ack("ep.0", 2, (("a", "stop"), ("b", "stop"))),  # as stored
        Ack("ep.4", 1, (("E", "stop"),)),  # the client got another text
        Ack("ep.9", 1, (("f", "stop"),)),  # never stored
    ]
    report = KillReport()
    check_store(store_path, acks, report)
    assert (report.lost, report.altered, report.partial) == (1, 1, 1)
    assert report.stored_calls == 3
    assert any("ep.2 asked n=3, stored choices [0, 1]" in p for p in report.problems)
