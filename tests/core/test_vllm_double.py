"""The vLLM test double reproduces real vLLM 0.32 responses field for field.

Every recorded request in the fixture folder is replayed against the double; the answer must have
the same keys at every nesting level and the same JSON types as what the real server sent
(values that depend on the model may differ), SSE chunk shapes included. The fixtures are the
real responses described in their README (vLLM 0.32.0 CPU build, recorded 2026-11-24).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from _vllm_fixtures import FIXTURES, needs_fixtures
from fulmen_testkit.vllm_double import VllmDouble, default_responder
from fulmen_testkit.vllm_double import tokenizer as toy
from fulmen_testkit.vllm_double.generation import RequestParams

pytestmark = needs_fixtures

# ----------------------------------------------------------------------------- schema compare

Schema = Any


def schema(value: Any, parent: str = "") -> Schema:
    """A hashable description of a JSON value's structure (types and keys, not values).

    Array element schemas are merged; an empty array's element schema is None (matches any).
    The completions ``top_logprobs`` objects are maps keyed by token text: only their value
    type counts.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        element: Schema = None
        for item in value:
            element = merge(element, schema(item, parent))
        return ("array", element)
    assert isinstance(value, dict)
    if parent == "top_logprobs" and "token" not in value:
        element = None
        for item in value.values():
            element = merge(element, schema(item))
        return ("map", element)
    return ("object", tuple(sorted((k, schema(v, k)) for k, v in value.items())))


def merge(a: Schema, b: Schema) -> Schema:
    if a is None:
        return b
    if b is None or a == b:
        return a
    if a[0] == b[0] == "array" or a[0] == b[0] == "map":
        return (a[0], merge(a[1], b[1]))
    if a[0] == b[0] == "object" and [k for k, _ in a[1]] == [k for k, _ in b[1]]:
        return (
            "object",
            tuple((k, merge(x, y)) for (k, x), (_, y) in zip(a[1], b[1], strict=True)),
        )
    raise AssertionError(f"array elements of different shapes: {a} vs {b}")


def compatible(a: Schema, b: Schema, path: str = "$") -> list[str]:
    """Differences between two schemas (empty when they match)."""
    if a is None or b is None or a == b:
        return []
    if isinstance(a, str) or isinstance(b, str) or a[0] != b[0]:
        return [f"{path}: {describe(a)} vs {describe(b)}"]
    if a[0] in ("array", "map"):
        return compatible(a[1], b[1], f"{path}[]")
    keys_a, keys_b = dict(a[1]), dict(b[1])
    out = [f"{path}.{k}: only in the double" for k in sorted(set(keys_a) - set(keys_b))]
    out += [f"{path}.{k}: missing from the double" for k in sorted(set(keys_b) - set(keys_a))]
    for k in sorted(set(keys_a) & set(keys_b)):
        out += compatible(keys_a[k], keys_b[k], f"{path}.{k}")
    return out


def describe(s: Schema) -> str:
    return s if isinstance(s, str) else s[0]


def test_schema_compare_catches_differences() -> None:
    base = {"a": 1, "b": [{"c": None}], "d": "x"}
    assert (
        compatible(schema(base), schema({"a": 2, "b": [{"c": None}, {"c": None}], "d": "y"})) == []
    )
    assert compatible(schema(base), schema({"a": 2, "b": [], "d": "y"})) == []
    assert compatible(schema(base), schema({"a": 1, "b": [{"c": "s"}], "d": "x"})) == [
        "$.b[].c: null vs string"
    ]
    assert compatible(schema(base), schema({"a": 1, "b": [{"c": None}]})) == [
        "$.d: only in the double"
    ]
    assert compatible(schema({"a": 1}), schema({"a": 1, "z": None})) == [
        "$.z: missing from the double"
    ]


# ----------------------------------------------------------------------------- helpers


def sse_events(text: str) -> list[str]:
    assert text.endswith("\n\n"), "an SSE stream ends with a blank line"
    events = text[:-2].split("\n\n")
    assert all(e.startswith("data: ") for e in events), events
    return [e[len("data: ") :] for e in events]


def post(url: str, body: dict[str, Any], request_id: str) -> tuple[int, str]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "X-Request-Id": request_id},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def fixture(name: str) -> str:
    assert FIXTURES is not None
    return (FIXTURES / name).read_text()


def _named_responder(messages: Any, tools: Any, params: RequestParams) -> str:
    """Replays the text the real model wrote in chat_toolcall_named (an unfinished tool call)."""
    return json.loads(fixture("chat_toolcall_named.response.json"))["choices"][0]["message"][
        "content"
    ]


def _required_responder(messages: Any, tools: Any, params: RequestParams) -> str:
    """A tool call cut by max_tokens inside its arguments, like chat_toolcall_required_stream."""
    return '<tool_call>\n{"name": "calculator", "arguments": ' + "3769 2037 " * 40


RESPONDERS = {
    "chat_toolcall_named": _named_responder,
    "chat_toolcall_required_stream": _required_responder,
}


@pytest.fixture(scope="module")
def double() -> Iterator[VllmDouble]:
    server = VllmDouble(model="tiny", max_model_len=2048)
    server.start_in_thread()
    yield server
    server.stop_thread()


def replay(double: VllmDouble, name: str) -> tuple[dict[str, Any], int, str]:
    request = json.loads(fixture(f"{name}.request.json"))
    expected = json.loads(fixture(f"{name}.response.json")) if not request.get("stream") else {}
    request_id = (expected.get("id") or "x-ep7.0").split("-", 1)[1]
    double.responder = RESPONDERS.get(name, default_responder)
    path = "/v1/completions" if "prompt" in request else "/v1/chat/completions"
    status, text = post(double.url + path, request, request_id)
    return request, status, text


# ----------------------------------------------------------------------------- the tests

NON_STREAMING = ["chat_nonstream", "chat_tools", "chat_toolcall_named", "chat_n2", "completions"]


@pytest.mark.parametrize("name", NON_STREAMING)
def test_non_streaming_response_has_vllm_structure(double: VllmDouble, name: str) -> None:
    request, status, text = replay(double, name)
    expected = json.loads(fixture(f"{name}.response.json"))
    got = json.loads(text)
    assert status == 200
    assert compatible(schema(got), schema(expected)) == []
    assert got["id"] == expected["id"]  # chatcmpl-/cmpl- + X-Request-Id, like vLLM
    assert len(got["choices"]) == request.get("n", 1)
    for choice in got["choices"]:
        assert len(choice["token_ids"]) <= request["max_tokens"]
        if request.get("logprobs") is not None:
            entries = choice["logprobs"].get("content") or choice["logprobs"]["tokens"]
            assert len(entries) == len(choice["token_ids"])
    prompt_ids = got.get("prompt_token_ids") or got["choices"][0]["prompt_token_ids"]
    assert got["usage"]["prompt_tokens"] == len(prompt_ids)
    completion = sum(len(c["token_ids"]) for c in got["choices"])
    assert got["usage"]["completion_tokens"] == completion


@pytest.mark.parametrize("name", ["chat_stream", "chat_toolcall_required_stream"])
def test_stream_chunks_have_vllm_shapes(double: VllmDouble, name: str) -> None:
    _, status, text = replay(double, name)
    assert status == 200
    expected = [json.loads(e) for e in sse_events(fixture(f"{name}.response.sse"))[:-1]]
    events = sse_events(text)
    assert events[-1] == "[DONE]"
    got = [json.loads(e) for e in events[:-1]]
    assert compatible(schema(got[0]), schema(expected[0])) == [], "first chunk"
    assert compatible(schema(got[-1]), schema(expected[-1])) == [], "last chunk"
    shapes_got = {schema(c) for c in got}
    shapes_expected = {schema(c) for c in expected}
    for shape in shapes_expected:
        assert any(not compatible(g, shape) for g in shapes_got), f"no chunk like {shape}"
    for shape in shapes_got:
        assert any(not compatible(shape, e) for e in shapes_expected), f"unexpected {shape}"
    # prompt ids ride on the first chunk only; every later token chunk carries its own ids
    assert "prompt_token_ids" in got[0]
    assert all("prompt_token_ids" not in c for c in got[1:])
    token_chunks = [c for c in got[1:] if c["choices"]]
    assert all(len(c["choices"][0]["token_ids"]) == 1 for c in token_chunks)
    assert {c["id"] for c in got} == {"chatcmpl-ep7.0"}


def test_tool_stream_has_empty_deltas_with_token_ids(double: VllmDouble) -> None:
    _, _, text = replay(double, "chat_toolcall_required_stream")
    chunks = [json.loads(e) for e in sse_events(text)[:-1]]
    empty = [c for c in chunks[1:] if c["choices"][0]["delta"] == {}]
    assert empty and all(c["choices"][0]["token_ids"] for c in empty)
    names = [
        call["function"]["name"]
        for c in chunks
        for call in c["choices"][0]["delta"].get("tool_calls") or []
        if "name" in call["function"]
    ]
    assert names == ["calculator"]


@pytest.mark.parametrize("name", ["error_badmodel", "error_context"])
def test_errors_match_vllm_exactly(double: VllmDouble, name: str) -> None:
    request = json.loads(fixture(f"{name}.request.json"))
    status, text = post(double.url + "/v1/chat/completions", request, "ep7.0")
    expected = json.loads(fixture(f"{name}.response.json"))
    assert status == expected["error"]["code"]
    assert json.loads(text) == expected


def test_models_has_vllm_structure(double: VllmDouble) -> None:
    with urllib.request.urlopen(double.url + "/v1/models", timeout=10) as response:
        got = json.loads(response.read())
    expected = json.loads(fixture("models.response.json"))
    assert compatible(schema(got), schema(expected)) == []
    assert got["data"][0]["id"] == "tiny" and got["data"][0]["max_model_len"] == 2048


def test_stream_and_non_stream_give_the_same_tokens(double: VllmDouble) -> None:
    double.responder = default_responder
    tools = json.loads(fixture("chat_tools.request.json"))["tools"]
    for extra in ({}, {"tools": tools, "tool_choice": "required"}):
        body = {"model": "tiny", "messages": [{"role": "user", "content": "3*4?"}], "seed": 9,
                "return_token_ids": True, "logprobs": True, **extra}  # fmt: skip
        whole = json.loads(post(double.url + "/v1/chat/completions", body, "a.0")[1])
        _, text = post(double.url + "/v1/chat/completions", {**body, "stream": True}, "a.1")
        chunks = [json.loads(e) for e in sse_events(text)[:-1]]
        ids = [i for c in chunks for ch in c["choices"] for i in ch.get("token_ids") or []]
        logprobs = [x["logprob"] for c in chunks for ch in c["choices"]
                    for x in (ch["logprobs"] or {}).get("content", [])]  # fmt: skip
        choice = whole["choices"][0]
        assert ids == choice["token_ids"] and ids[-1] == toy.get_tokenizer().end_id
        assert logprobs == [x["logprob"] for x in choice["logprobs"]["content"]]
        assert chunks[0]["prompt_token_ids"] == whole["prompt_token_ids"]
        if extra:
            (call,) = choice["message"]["tool_calls"]
            assert choice["finish_reason"] == "tool_calls"
            assert set(json.loads(call["function"]["arguments"])) == {"expression"}
            streamed = "".join(
                tc["function"].get("arguments", "")
                for c in chunks
                for tc in c["choices"][0]["delta"].get("tool_calls") or []
            )
            assert streamed == call["function"]["arguments"]
            assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_generation_is_deterministic_by_seed(double: VllmDouble) -> None:
    double.responder = default_responder
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "seed": 1,
            "return_token_ids": True}  # fmt: skip
    first = json.loads(post(double.url + "/v1/chat/completions", body, "s.0")[1])
    again = json.loads(post(double.url + "/v1/chat/completions", body, "s.1")[1])
    other = json.loads(post(double.url + "/v1/chat/completions", {**body, "seed": 2}, "s.2")[1])
    assert first["choices"][0]["token_ids"] == again["choices"][0]["token_ids"]
    assert first["choices"][0]["token_ids"] != other["choices"][0]["token_ids"]


def test_max_tokens_and_stop(double: VllmDouble) -> None:
    double.responder = lambda m, t, p: "alpha beta gamma delta"
    base = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "hi"}],
        "return_token_ids": True,
    }
    cut = json.loads(post(double.url + "/v1/chat/completions", {**base, "max_tokens": 2}, "m.0")[1])
    assert (
        cut["choices"][0]["finish_reason"] == "length" and len(cut["choices"][0]["token_ids"]) == 2
    )
    stop = json.loads(
        post(double.url + "/v1/chat/completions", {**base, "stop": [" gamma"]}, "m.1")[1]
    )
    assert stop["choices"][0]["message"]["content"] == "alpha beta"
    assert stop["choices"][0]["finish_reason"] == "stop"
    assert stop["choices"][0]["stop_reason"] == " gamma"
    full = json.loads(post(double.url + "/v1/chat/completions", base, "m.2")[1])
    assert full["choices"][0]["message"]["content"] == "alpha beta gamma delta"
    assert full["choices"][0]["token_ids"][-1] == toy.get_tokenizer().end_id


def test_tokenizer_is_real_and_deterministic() -> None:
    tok = toy.get_tokenizer()
    again = toy._train()  # an independent training run gives the same vocabulary
    text = toy.render_chat([{"role": "user", "content": "What is 3 times 4? é"}])
    ids = tok.encode(text)
    assert ids == again.encode(text)
    assert tok.decode(ids) == text.replace("<|im_start|>", "").replace("<|im_end|>", "")
    assert len(ids) < len(text.encode())  # merges were learned: fewer ids than bytes
    assert "".join(tok.stream_decode(ids)) == tok.decode(ids)
    assert tok.encode("<tool_call>") == [tok.encode("<tool_call>")[0]]


def test_context_limits_like_real_vllm_032(double: VllmDouble) -> None:
    """Seen on a real vLLM 0.32 server: prompt + max_tokens beyond the context is clipped (200,
    not vLLM 0.10's 400), a prompt longer than the context is a 400 "at least N"."""
    fits = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2040}
    status, text = post(double.url + "/v1/chat/completions", fits, "ep7.1")
    body = json.loads(text)
    assert status == 200 and body["usage"]["total_tokens"] <= 2048
    long = {"model": "tiny", "messages": [{"role": "user", "content": "word " * 3000}]}
    status, text = post(double.url + "/v1/chat/completions", long, "ep7.2")
    error = json.loads(text)["error"]
    assert status == 400 and error["param"] == "input_tokens"
    assert "your prompt contains at least 2049 input tokens" in error["message"]
    assert error["message"].endswith("(parameter=input_tokens, value=2049)")
