"""OpenTelemetry export end to end: episodes from a real store go through the OTLP/HTTP
exporter to a real OTLP receiver on loopback (an aiohttp server decoding the
``ExportTraceServiceRequest`` protobuf, the OTLP wire format); the span tree is checked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from _observe_data import add_failed_episode, add_tool_episode
from _otlp_receiver import OtlpReceiver, by_episode
from _otlp_receiver import attrs as decode
from fulmen.store.sqlite import SQLiteStore
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    path = tmp_path / "episodes.db"
    with SQLiteStore(path) as store:
        add_tool_episode(store, "ep-a", reward=1.0)
        add_tool_episode(store, "ep-b", reward=0.0, tool_error=True)
        add_failed_episode(store, "ep-down")
    return path


def _export(store: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "fulmen.cli",
            "export-otel",
            "--store",
            str(store),
            "--endpoint",
            url,
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_episodes_arrive_as_genai_span_trees(store_path: Path) -> None:
    with OtlpReceiver() as receiver:
        done = _export(store_path, receiver.url, "--service-name", "calc-run")
    assert done.returncode == 0, done.stderr
    assert f"exported 3 episodes to {receiver.url}/v1/traces" in done.stderr
    assert receiver.requests >= 1
    assert {r["service.name"] for r, _ in receiver.spans} == {"calc-run"}
    trees = by_episode(receiver.spans)
    assert sorted(trees) == ["ep-a", "ep-b", "ep-down"]
    assert len(receiver.spans) == 3 + 3 + 3 + 1  # roots + (2 chats + 1 tool) x 2 + 1 chat

    root, *children = trees["ep-a"]
    assert root.name == "episode"
    attrs = decode(root.attributes)
    assert attrs["fulmen.episode.status"] == "succeeded"
    assert attrs["fulmen.episode.termination"] == "completed"
    assert attrs["fulmen.task.id"] == "task-ep-a" and attrs["gen_ai.conversation.id"] == "ep-a"
    assert attrs["fulmen.reward.outcome"] == 1.0 and attrs["fulmen.reward.format"] == 0.5
    assert [(e.name, decode(e.attributes)) for e in root.events] == [
        ("fulmen.reward", {"fulmen.reward.value": 1.0}),
        ("fulmen.reward", {"fulmen.reward.value": 0.5, "fulmen.reward.name": "format"}),
        ("fulmen.reward", {"fulmen.reward.value": 0.25, "fulmen.reward.step": 0}),
    ]
    assert {c.trace_id for c in children} == {root.trace_id}

    chats = sorted(
        (c for c in children if c.name == "chat policy"), key=lambda s: s.start_time_unix_nano
    )
    assert len(chats) == 2
    first, second = (decode(c.attributes) for c in chats)
    assert first["gen_ai.operation.name"] == "chat" and first["gen_ai.request.model"] == "policy"
    assert (first["gen_ai.usage.input_tokens"], first["gen_ai.usage.output_tokens"]) == (10, 4)
    assert (second["gen_ai.usage.input_tokens"], second["gen_ai.usage.output_tokens"]) == (15, 5)
    assert first["gen_ai.response.finish_reasons"] == ["tool_calls"]
    assert second["gen_ai.response.finish_reasons"] == ["stop"]
    assert (first["gen_ai.agent.name"], second["gen_ai.agent.name"]) == ("planner", "solver")
    assert first["gen_ai.request.temperature"] == 1.0 and first["fulmen.framework"] == "langchain"
    assert "gen_ai.input.messages" not in first  # content is opt-in
    assert chats[0].kind == Span.SpanKind.SPAN_KIND_CLIENT
    assert [decode(e.attributes)["fulmen.reward.step"] for e in chats[0].events] == [0]
    assert not chats[1].events

    [tool] = [c for c in children if c.name == "execute_tool calculator"]
    tattrs = decode(tool.attributes)
    assert tattrs["gen_ai.operation.name"] == "execute_tool"
    assert tattrs["gen_ai.tool.name"] == "calculator"
    assert tattrs["gen_ai.tool.call.id"] == "call_ep-a_0"
    # the tool ran between the call that asked for it and the call that received its result
    assert tool.start_time_unix_nano == chats[0].end_time_unix_nano
    assert tool.end_time_unix_nano == chats[1].start_time_unix_nano
    assert root.start_time_unix_nano <= chats[0].start_time_unix_nano
    assert root.end_time_unix_nano >= chats[1].end_time_unix_nano
    assert tool.status.code != Status.StatusCode.STATUS_CODE_ERROR

    [bad_tool] = [c for c in trees["ep-b"] if c.name.startswith("execute_tool")]
    assert bad_tool.status.code == Status.StatusCode.STATUS_CODE_ERROR
    assert bad_tool.status.message == "division by zero"

    down, call = trees["ep-down"]
    assert down.status.code == Status.StatusCode.STATUS_CODE_ERROR
    assert decode(down.attributes)["error.type"] == "upstream_error"
    assert call.name == "chat policy"


def test_capture_content_and_limit(store_path: Path) -> None:
    with OtlpReceiver() as receiver:
        done = _export(store_path, f"{receiver.url}/v1/traces", "--capture-content", "--limit", "1")
    assert done.returncode == 0, done.stderr
    [(root, *children)] = by_episode(receiver.spans).values()
    assert decode(root.attributes)["fulmen.episode.id"] == "ep-down"  # the last one finished
    attrs = decode(children[0].attributes)
    assert '"what is 6*7?"' in attrs["gen_ai.input.messages"]


def test_in_process_exporter_with_the_feed(store_path: Path) -> None:
    from fulmen.observe.feed import EpisodeFeed
    from fulmen.observe.otel import EpisodeSpanExporter

    with OtlpReceiver() as receiver, SQLiteStore(store_path) as store:
        exporter = EpisodeSpanExporter(endpoint=receiver.url)
        feed = EpisodeFeed(store, backlog=None)
        assert exporter.export(feed.poll()) == 3
        add_tool_episode(store, "ep-late")
        assert exporter.export(feed.poll()) == 1
        exporter.shutdown()
    assert sorted(by_episode(receiver.spans)) == ["ep-a", "ep-b", "ep-down", "ep-late"]


def test_without_the_sdk_the_error_names_the_install(store_path: Path) -> None:
    code = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None  # as if not installed\n"
        "from fulmen.cli import main\n"
        f"sys.exit(main(['export-otel', '--store', {str(store_path)!r}, '--endpoint', "
        "'http://127.0.0.1:9']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=os.environ
    )
    assert done.returncode == 2
    assert "fulmen export-otel: error: OpenTelemetry export needs opentelemetry-sdk" in done.stderr
    assert "pip install 'fulmen[otel]'" in done.stderr


def test_bad_endpoint_and_missing_store(tmp_path: Path, store_path: Path) -> None:
    done = _export(store_path, "localhost:4318")
    assert done.returncode == 2 and "expected an http(s):// URL" in done.stderr
    done = _export(tmp_path / "none.db", "http://127.0.0.1:9")
    assert done.returncode == 2 and "no store at" in done.stderr
