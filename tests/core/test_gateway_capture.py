"""Capture on REAL vLLM 0.32 responses (the recorded fixtures): streams reassemble into the same
records as non-streamed responses, tool-call deltas merge, empty-delta chunks keep their ids."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fulmen.gateway.capture import CHAT, COMPLETIONS, CallContext, StreamAccumulator
from fulmen.gateway.capture import transitions_from_response as capture
from fulmen.gateway.upstream import Wants, iter_sse_data, shape_request, strip_chunk, strip_response

_CANDIDATES = [
    os.environ.get("FULMEN_VLLM_FIXTURES", ""),
    str(Path(__file__).resolve().parents[1] / "fixtures" / "vllm-0.32-cpu"),
    "/work/shared/fixtures/vllm-0.32-cpu",
]
FIXTURES = next((Path(p) for p in _CANDIDATES if p and (Path(p) / "README.md").exists()), None)
needs_fixtures = pytest.mark.skipif(FIXTURES is None, reason="real vLLM fixtures not found")


def load(name: str) -> Any:
    assert FIXTURES is not None
    text = (FIXTURES / name).read_text()
    if name.endswith(".sse"):
        return [json.loads(e[6:]) for e in text.strip().split("\n\n") if e != "data: [DONE]"]
    return json.loads(text)


def context(request: dict[str, Any], *, stream: bool = False, first_seq: int = 4) -> CallContext:
    chat = "messages" in request
    prompt = request.get("prompt")
    return CallContext(
        episode_id="ep7",
        first_seq=first_seq,
        request_id=f"ep7.{first_seq}",
        endpoint=CHAT if chat else COMPLETIONS,
        agent=None,
        parent_id=None,
        tags={},
        messages=tuple(request.get("messages", ())),
        prompts=(prompt,) if prompt else (),
        tools=tuple(request.get("tools", ())),
        params={"model": request["model"]},
        n=request.get("n", 1),
        started_at=1.0,
        stream=stream,
    )


def record(request: dict[str, Any], response: dict[str, Any], stream: bool = False) -> list[Any]:
    ctx = context(request, stream=stream)
    return capture(ctx, response, policy_version=None, upstream_latency_s=0.1, ended_at=2.0)


def from_stream(request: dict[str, Any], chunks: list[dict[str, Any]]) -> list[Any]:
    accumulator = StreamAccumulator(CHAT if "messages" in request else COMPLETIONS)
    for chunk in chunks:
        accumulator.feed(chunk)
    return record(request, accumulator.response(), stream=True)


@needs_fixtures
def test_real_non_streaming_chat_response() -> None:
    request, response = load("chat_nonstream.request.json"), load("chat_nonstream.response.json")
    (t,) = record(request, response)
    choice = response["choices"][0]
    assert (t.episode_id, t.seq, t.request_id) == ("ep7", 4, "ep7.4")
    assert list(t.prompt_token_ids) == response["prompt_token_ids"]
    assert list(t.response_token_ids) == choice["token_ids"]
    assert list(t.response_logprobs or ()) == [x["logprob"] for x in choice["logprobs"]["content"]]
    assert t.response_message == {"role": "assistant", "content": choice["message"]["content"]}
    assert t.request_messages == tuple(request["messages"])
    assert t.finish_reason == "length" and t.flags == () and t.trainable


@needs_fixtures
def test_real_n2_response_gives_consecutive_seqs() -> None:
    request, response = load("chat_n2.request.json"), load("chat_n2.response.json")
    records = record(request, response)
    assert [t.seq for t in records] == [4, 5]
    assert {t.request_id for t in records} == {"ep7.4"}
    assert [list(t.response_token_ids) for t in records] == [
        c["token_ids"] for c in response["choices"]
    ]
    assert records[0].prompt_token_ids == records[1].prompt_token_ids


@needs_fixtures
def test_real_completions_response_has_per_choice_prompt_ids() -> None:
    request, response = load("completions.request.json"), load("completions.response.json")
    (t,) = record(request, response)
    choice = response["choices"][0]
    assert list(t.prompt_token_ids) == choice["prompt_token_ids"]
    assert list(t.response_token_ids) == choice["token_ids"]
    assert list(t.response_logprobs or ()) == choice["logprobs"]["token_logprobs"]
    assert t.request_messages == ({"role": "user", "content": "The answer is"},)


@needs_fixtures
def test_real_stream_reassembles_like_the_non_streamed_call() -> None:
    request, chunks = load("chat_stream.request.json"), load("chat_stream.response.sse")
    (t,) = from_stream(request, chunks)
    ids = [i for c in chunks for ch in c["choices"] for i in ch.get("token_ids", [])]
    assert list(t.prompt_token_ids) == chunks[0]["prompt_token_ids"]
    assert list(t.response_token_ids) == ids and len(ids) == request["max_tokens"]
    assert t.response_message["content"] == "".join(
        ch["delta"].get("content") or "" for c in chunks for ch in c["choices"]
    )
    assert len(t.response_logprobs or ()) == len(ids)
    assert t.finish_reason == "length" and t.flags == ("stream",)


@needs_fixtures
def test_real_tool_stream_with_empty_deltas_merges_tool_calls() -> None:
    request = load("chat_toolcall_required_stream.request.json")
    chunks = load("chat_toolcall_required_stream.response.sse")
    (t,) = from_stream(request, chunks)
    ids = [i for c in chunks for ch in c["choices"] for i in ch.get("token_ids", [])]
    assert list(t.response_token_ids) == ids and len(ids) == request["max_tokens"]
    arguments = "".join(
        call["function"].get("arguments", "")
        for c in chunks
        for call in c["choices"][0]["delta"].get("tool_calls") or []
    )
    (call,) = t.tool_calls
    assert call == {
        "id": "chatcmpl-tool-abbf4218ebbc6089",
        "type": "function",
        "function": {"name": "calculator", "arguments": arguments},
    }
    assert t.response_message == {"role": "assistant", "content": None, "tool_calls": [call]}
    assert t.response_logprobs is None and "no_logprobs" in t.flags  # none were asked for
    assert t.trainable and t.request_tools == tuple(request["tools"])


def test_missing_ids_are_flagged_never_invented() -> None:
    request = {"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2}
    response = {
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "a"}, "finish_reason": "stop"},
            {"index": 1, "message": {"role": "assistant", "content": "b"}, "token_ids": [5, 6],
             "logprobs": {"content": [{"logprob": -1.0}]}, "finish_reason": "stop"},
            {"index": 7, "message": {"role": "assistant", "content": "stray"}},
        ],
    }  # fmt: skip
    first, second = record(request, response)  # the stray index 7 is not this call's choice
    assert first.flags == ("no_token_ids", "no_logprobs") and first.response_token_ids == ()
    assert first.prompt_token_ids == () and not first.trainable
    assert "no_token_ids" in second.flags  # completion ids alone are not enough: no prompt ids
    assert second.response_token_ids == (5, 6)  # what the upstream sent is kept as sent
    assert "logprobs_mismatch" in second.flags


def test_upstream_request_shaping_and_stripping() -> None:
    body = {"model": "m", "messages": [], "logprobs": False}
    shaped, wants = shape_request(body, chat=True)
    assert shaped["return_token_ids"] is True and shaped["logprobs"] is True
    assert shaped["top_logprobs"] == 0 and body == {"model": "m", "messages": [], "logprobs": False}
    assert wants == Wants(token_ids=False, logprobs=False)
    shaped, wants = shape_request({"prompt": "p", "logprobs": 3, "return_token_ids": True}, False)
    assert shaped["logprobs"] == 3 and wants.everything
    assert shape_request({"prompt": "p"}, False)[0]["logprobs"] == 0
    response = {
        "prompt_token_ids": [1],
        "choices": [{"token_ids": [2], "logprobs": {"content": []}}],
    }
    strip_response(response, Wants(token_ids=False, logprobs=False))
    assert response == {
        "prompt_token_ids": None,
        "choices": [{"token_ids": None, "logprobs": None}],
    }
    chunk = {"prompt_token_ids": [1], "choices": [{"token_ids": [2], "logprobs": {"content": []}}]}
    strip_chunk(chunk, Wants(token_ids=False, logprobs=True))
    assert chunk == {"choices": [{"logprobs": {"content": []}}]}


class _Pieces:
    def __init__(self, pieces: list[bytes]) -> None:
        self._pieces = pieces

    async def iter_any(self) -> AsyncIterator[bytes]:
        for piece in self._pieces:
            yield piece


def test_sse_reader_splits_events_across_pieces() -> None:
    big = json.dumps({"prompt_token_ids": list(range(50_000))}).encode()  # > 64 KiB in one line
    stream = b"data: " + big + b'\r\n\r\n: comment\n\ndata: {"a": 1}\n\ndata: [DONE]\n\n'
    pieces = [stream[i : i + 1000] for i in range(0, len(stream), 1000)]

    async def collect() -> list[bytes]:
        return [data async for data in iter_sse_data(_Pieces(pieces))]

    assert asyncio.run(collect()) == [big, b'{"a": 1}', b"[DONE]"]
