"""fulmen.wire writes vLLM's wire format byte for byte.

Each real vLLM 0.32 response in the fixture folder is rebuilt through :mod:`fulmen.wire` from the
values it holds (texts, ids, logprobs, finish reasons); the bytes must equal what vLLM sent:
same fields, same order, same null-versus-absent, same JSON spelling. The rules the fixtures do
not show (chunk skipping, logprob clamping, completions top maps) are pinned below.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from _vllm_fixtures import FIXTURES, needs_fixtures
from fulmen import wire


@dataclass(frozen=True)
class _Out:
    """A finished choice as a server holds it (:class:`fulmen.wire.Finished`)."""

    token_ids: Sequence[int]
    text: str
    finish_reason: str
    stop_reason: str | int | None


def _out(choice: dict[str, Any], text: str) -> _Out:
    ids = choice["token_ids"] or ()
    return _Out(ids, text, choice["finish_reason"], choice["stop_reason"])


def _raw(name: str) -> bytes:
    assert FIXTURES is not None
    return (FIXTURES / name).read_bytes()


def _envelope(body: dict[str, Any], fingerprint: str) -> wire.Envelope:
    return wire.Envelope(
        response_id=body["id"],
        created=body["created"],
        model=body["model"],
        fingerprint=fingerprint,
    )


def _top(entries: list[dict[str, Any]]) -> wire.TopLogprobs:
    return [(e["token"], e["logprob"]) for e in entries]


def _chat_entries(logprobs: dict[str, Any] | None) -> list[dict[str, Any]] | None:
    if logprobs is None:
        return None
    return [
        wire.chat_logprob(e["token"], e["logprob"], _top(e["top_logprobs"]))
        for e in logprobs["content"]
    ]


def _message(message: dict[str, Any]) -> dict[str, Any]:
    calls = [
        wire.tool_call(c["id"], c["function"]["name"], c["function"]["arguments"])
        for c in message.get("tool_calls") or ()
    ]
    return wire.chat_message(message["content"], calls)


@needs_fixtures
@pytest.mark.parametrize("name", ["chat_nonstream", "chat_n2", "chat_tools", "chat_toolcall_named"])
def test_chat_completions_are_rebuilt_byte_for_byte(name: str) -> None:
    raw = _raw(f"{name}.response.json")
    sent = json.loads(raw)
    choices = [
        wire.chat_choice(
            c["index"],
            _out(c, c["message"]["content"] or ""),
            _message(c["message"]),
            logprobs=_chat_entries(c["logprobs"]),
            return_token_ids=c["token_ids"] is not None,
        )
        for c in sent["choices"]
    ]
    u = sent["usage"]
    body = _envelope(sent, sent["system_fingerprint"]).chat_completion(
        choices,
        usage=wire.usage(u["prompt_tokens"], u["completion_tokens"]),
        prompt_token_ids=sent["prompt_token_ids"],
    )
    assert wire.dumps(body).encode() == raw


@needs_fixtures
def test_a_completion_is_rebuilt_byte_for_byte() -> None:
    raw = _raw("completions.response.json")
    sent = json.loads(raw)
    choices = []
    for c in sent["choices"]:
        lp = c["logprobs"]
        tops = [[(t, v) for t, v in top.items() if t != token] for token, top in
                zip(lp["tokens"], lp["top_logprobs"], strict=True)]  # fmt: skip
        choices.append(
            wire.completion_choice(
                c["index"],
                _out(c, c["text"]),
                logprobs=wire.completion_logprobs(lp["tokens"], lp["token_logprobs"], tops),
                prompt_token_ids=c["prompt_token_ids"] or (),
                return_token_ids=c["token_ids"] is not None,
            )
        )
    u = sent["usage"]
    body = _envelope(sent, sent["system_fingerprint"]).completion(
        choices, usage=wire.usage(u["prompt_tokens"], u["completion_tokens"])
    )
    assert wire.dumps(body).encode() == raw


def _delta(delta: dict[str, Any]) -> dict[str, Any]:
    """Rebuild a recorded delta, tool-call entries through :func:`wire.tool_call_delta`."""
    if "tool_calls" not in delta:
        return delta
    calls = [
        wire.tool_call_delta(
            c["index"],
            call_id=c.get("id"),
            name=c["function"].get("name"),
            arguments=c["function"].get("arguments"),
        )
        for c in delta["tool_calls"]
    ]
    return {"content": delta["content"], "tool_calls": calls}


@needs_fixtures
@pytest.mark.parametrize("name", ["chat_stream", "chat_toolcall_required_stream"])
def test_chat_streams_are_rebuilt_byte_for_byte(name: str) -> None:
    raw = _raw(f"{name}.response.sse")
    events = raw.decode().split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    fingerprint = next(c["system_fingerprint"] for c in chunks if "system_fingerprint" in c)
    envelope = _envelope(chunks[0], fingerprint)
    has_usage = "usage" in chunks[-1]
    out = bytearray(wire.sse_event(envelope.role_chunk(0, chunks[0]["prompt_token_ids"])))
    tokens = chunks[1:-1] if has_usage else chunks[1:]
    for k, chunk in enumerate(tokens):
        c = chunk["choices"][0]
        choice = wire.chat_chunk_choice(
            c["index"],
            _delta(c["delta"]),
            logprobs=_chat_entries(c["logprobs"]),
            finish_reason=c["finish_reason"],
            stop_reason=c.get("stop_reason"),
            token_ids=c["token_ids"],
        )
        final = k == len(tokens) - 1 and not has_usage
        out += wire.sse_event(envelope.chat_chunk(choice, final=final))
    if has_usage:
        u = chunks[-1]["usage"]
        out += wire.sse_event(envelope.chat_usage_chunk(u["prompt_tokens"], u["completion_tokens"]))
    out += wire.SSE_DONE
    assert bytes(out) == raw


@needs_fixtures
@pytest.mark.parametrize("name", ["error_badmodel", "error_context"])
def test_error_bodies_are_rebuilt_byte_for_byte(name: str) -> None:
    raw = _raw(f"{name}.response.json")
    error = json.loads(raw)["error"]
    body = wire.error_body(error["code"], error["message"], param=error["param"])
    assert wire.dumps(body).encode() == raw


@needs_fixtures
def test_the_model_list_has_vllms_fields() -> None:
    sent = json.loads(_raw("models.response.json"))
    card = sent["data"][0]
    ours = wire.model_list(card["id"], card["max_model_len"], root=card["root"])
    for a, b in ((ours, sent), (ours["data"][0], card)):
        assert list(a) == list(b)
    mine, theirs = ours["data"][0]["permission"][0], card["permission"][0]
    assert list(mine) == list(theirs)
    assert {k: v for k, v in mine.items() if k not in ("id", "created")} == {
        k: v for k, v in theirs.items() if k not in ("id", "created")
    }


# ----------------------------------------------------------------------------- rules


def test_an_empty_delta_is_sent_only_when_it_finishes_or_ids_were_asked_for() -> None:
    assert not wire.sends_chat_chunk({}, None, token_ids=False)
    assert wire.sends_chat_chunk({}, None, token_ids=True)
    assert wire.sends_chat_chunk({}, "stop", token_ids=False)
    assert wire.sends_chat_chunk({"content": "x"}, None, token_ids=False)


def test_logprobs_are_clamped_to_valid_json() -> None:
    entry = wire.chat_logprob("a", -math.inf, [("b", -math.inf)])
    assert entry["logprob"] == entry["top_logprobs"][0]["logprob"] == -9999.0
    assert "Infinity" not in wire.dumps(wire.completion_logprobs(["a"], [-math.inf], [[]]))


def test_a_completions_top_map_keeps_the_sampled_tokens_logprob() -> None:
    out = wire.completion_logprobs(
        ["ab", "c"], [-1.0, -2.0], [[("ab", -0.5), ("x", -3.0)], []], offset=4
    )
    assert out == {
        "text_offset": [4, 6],
        "token_logprobs": [-1.0, -2.0],
        "tokens": ["ab", "c"],
        "top_logprobs": [{"ab": -1.0, "x": -3.0}, {"c": -2.0}],
    }


def test_completion_chunks_carry_stop_reason_throughout_and_ids_only_when_asked() -> None:
    common: dict[str, Any] = {"logprobs": None, "finish_reason": None, "stop_reason": None}
    plain = wire.completion_chunk_choice(0, "t", token_ids=None, prompt_token_ids=None, **common)
    assert plain == {"index": 0, "text": "t", **common}
    first = wire.completion_chunk_choice(0, "t", token_ids=[5], prompt_token_ids=[1, 2], **common)
    assert (first["token_ids"], first["prompt_token_ids"]) == ([5], [1, 2])


def test_the_trailer_ends_every_body_and_json_is_compact_utf8() -> None:
    envelope = wire.Envelope(
        response_id="cmpl-1", created=0, model="m", fingerprint="f", trailer={"policy_version": 3}
    )
    chunk = envelope.completion_usage_chunk(2, 1)
    assert list(chunk)[-2:] == ["usage", "policy_version"]
    assert list(envelope.chat_chunk(wire.role_choice(0), final=True))[-2:] == [
        "system_fingerprint",
        "policy_version",
    ]
    assert wire.sse_event({"text": "é"}) == 'data: {"text":"é"}\n\n'.encode()
