"""Adapter annotations: merge rules, the store, the gateway route, ``step="current"``."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import openai
import pytest
from fulmen.context import (
    EpisodeContext,
    RewardError,
    current_step,
    episode_scope,
    scoped_episode,
    step_scope,
    use_episode,
)
from fulmen.gateway import Gateway
from fulmen.protocol import (
    Annotation,
    Episode,
    EpisodeStatus,
    Task,
    TerminationReason,
    Transition,
    annotate_transitions,
    request_id_of,
)
from fulmen.store import SQLiteStore
from fulmen.store.base import EpisodeNotFound
from fulmen_testkit.vllm_double import VllmDouble


def _t(seq: int, request_id: str | None = None, **kw: object) -> Transition:
    return Transition(episode_id="e", seq=seq, request_id=request_id or f"e.{seq}", **kw)  # type: ignore[arg-type]


def test_merge_rules() -> None:
    transitions = [_t(0, agent="user-field"), _t(1), _t(2, "e.1")]  # seq 2 shares call e.1 (n=2)
    notes = [
        Annotation(
            episode_id="e",
            request_id="e.0",
            framework="langchain",
            agent="planner",
            node="plan",
            path=("graph", "plan"),
            tool_results=({"tool_call_id": "a", "name": "t", "output": "1"},),
        ),
        Annotation(
            episode_id="e",
            request_id="e.0",
            framework="langchain",
            tool_results=({"tool_call_id": "b", "name": "t", "error": "boom"},),
            metadata={"run_id": "r1"},
        ),
        Annotation(episode_id="e", request_id="e.1", framework="dspy", agent="solver"),
        Annotation(episode_id="e", request_id="e.9", framework="dspy", agent="ghost"),
    ]
    out = annotate_transitions(transitions, notes)
    assert out[0].agent == "planner"
    assert out[0].metadata == {
        "framework": "langchain",
        "node": "plan",
        "path": ["graph", "plan"],
        "run_id": "r1",
        "tool_results": [
            {"tool_call_id": "a", "name": "t", "output": "1"},
            {"tool_call_id": "b", "name": "t", "error": "boom"},
        ],
    }
    assert out[1].agent == out[2].agent == "solver"
    assert "ghost" not in {t.agent for t in out}
    assert annotate_transitions(transitions, []) == transitions
    # An annotation without an agent keeps the one the gateway recorded.
    kept = annotate_transitions(
        [_t(0, agent="a")], [Annotation(episode_id="e", request_id="e.0", framework="x")]
    )
    assert kept[0].agent == "a"


def test_request_id_of() -> None:
    assert request_id_of("chatcmpl-ep-1.3") == "ep-1.3"
    assert request_id_of("cmpl-ep-1.3") == "ep-1.3"
    assert request_id_of("ep-1.3") == "ep-1.3"


def test_store_keeps_annotations_and_merges_them(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "s.db") as store:
        store.add_episode(Episode(id="e", task=Task(id="t")))
        store.add_transition(_t(0))
        note = Annotation(episode_id="e", request_id="e.0", framework="autogen", agent="coder")
        store.add_annotation(note)
        assert store.annotations("e") == [note]
        assert store.transitions("e")[0].agent == "coder"
        assert store.record("e").transitions[0].metadata["framework"] == "autogen"
        # transitions_since gives the gateway's record as written
        assert store.transitions_since(0)[0][1].agent is None
        with pytest.raises(EpisodeNotFound):
            store.add_annotation(Annotation(episode_id="nope", request_id="nope.0", framework="x"))
        with pytest.raises(EpisodeNotFound):
            store.annotations("nope")


def test_schema_1_store_gains_the_annotations_table(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with SQLiteStore(path) as store:
        store.add_episode(Episode(id="e", task=Task(id="t")))
    with sqlite3.connect(path) as db:  # make it look like a file written by schema 1
        db.execute("DROP TABLE annotations")
        db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    db.close()
    with SQLiteStore(path) as store:
        store.add_annotation(Annotation(episode_id="e", request_id="e.0", framework="x"))
        assert len(store.annotations("e")) == 1
        assert store.get_episode("e").id == "e"


@pytest.fixture
def gateway(tmp_path: Path):
    double = VllmDouble()
    upstream = double.start_in_thread()
    store = SQLiteStore(tmp_path / "s.db")
    gw = Gateway(store, upstream)
    gw.start_in_thread()
    try:
        yield gw
    finally:
        gw.stop_thread()
        double.stop_thread()
        store.close()


def test_annotations_over_http_join_the_call(gateway: Gateway) -> None:
    episode = gateway.start_episode(Task(id="t"))
    ctx = EpisodeContext(episode_id=episode.id, gateway_url=gateway.url)  # no sink: HTTP
    client = openai.OpenAI(base_url=ctx.base_url, api_key="x", timeout=30, max_retries=0)
    response = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    assert response.id == f"chatcmpl-{episode.id}.0"
    raw = client.chat.completions.with_raw_response.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4, stream=True
    )
    assert raw.headers["X-Request-Id"] == f"{episode.id}.1"  # the adapters' join contract
    for _ in raw.parse():
        pass
    ctx.annotate(response.id, framework="langchain", agent="writer", node="draft")
    assert len(gateway.store.transitions(episode.id)) == 2
    t = gateway.store.transitions(episode.id)[0]
    assert (t.agent, t.metadata["node"], t.metadata["framework"]) == (
        "writer",
        "draft",
        "langchain",
    )
    with pytest.raises(RewardError, match="is not a call of episode"):
        ctx.annotate("chatcmpl-other.0", framework="x")
    gateway.finish_episode(
        episode.id, status=EpisodeStatus.SUCCEEDED, termination=TerminationReason.COMPLETED
    )
    with pytest.raises(RewardError, match="HTTP 409"):
        ctx.annotate(response.id, framework="x")
    assert len(gateway.store.annotations(episode.id)) == 1


def test_step_current_follows_annotations_and_step_scope(gateway: Gateway) -> None:
    episode = gateway.start_episode(Task(id="t"))
    rewards: list[object] = []
    ctx = EpisodeContext(
        episode_id=episode.id,
        gateway_url=gateway.url,
        sink=rewards.append,
        annotation_sink=gateway.add_annotation,
    )
    with episode_scope(ctx):
        with pytest.raises(RewardError, match="no LLM call of episode"):
            ctx.reward(1.0, step="current")
        assert scoped_episode() is ctx
        other = EpisodeContext(episode_id="ep-other", gateway_url=gateway.url)
        with use_episode(other):
            assert scoped_episode() is other
        assert scoped_episode() is ctx
        client = openai.OpenAI(base_url=ctx.base_url, api_key="x", timeout=30, max_retries=0)
        for _ in range(3):
            client.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2
            )
        ctx.annotate(f"chatcmpl-{episode.id}.1", framework="x")
        assert ctx.reward(0.5, step="current").step == 1
        ctx.annotate(f"chatcmpl-{episode.id}.2", framework="x")
        ctx.annotate(f"chatcmpl-{episode.id}.0", framework="x")  # late note of an older call
        assert current_step(episode.id) == 2
        with step_scope(episode.id, 0):
            assert ctx.reward(0.5, step="current").step == 0
            with pytest.raises(RewardError):  # the hint is for this episode only
                current_step("another-episode")
        assert ctx.reward(0.5, step=None).step is None
    with pytest.raises(RewardError):  # the scope ended: nothing is remembered
        current_step(episode.id)
