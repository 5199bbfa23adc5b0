"""The HTTP server through the official OpenAI client: token ids, streaming, tools, hot swap."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import torch
from fulmen_local.server import POLICY_VERSION_HEADER, InferenceServer
from openai.types.chat import ChatCompletionMessageParam


@pytest.fixture(scope="module")
def random_server(random_model, tokenizer) -> Iterator[InferenceServer]:
    server = InferenceServer(random_model, tokenizer, model_name="tiny", batch_window_ms=5)
    server.start_in_thread()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tool_server(tool_model, tokenizer) -> Iterator[InferenceServer]:
    with InferenceServer(tool_model, tokenizer, model_name="tiny") as server:
        yield server


def _client(server: InferenceServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", timeout=60, max_retries=0)


def _extra(obj: Any, name: str) -> Any:
    extra = obj.model_extra or {}
    assert name in extra, f"{name} missing from {type(obj).__name__}"
    return extra[name]


MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Tell me something."}]


def test_openai_client_gets_token_ids_and_logprobs(random_server, prompt_ids) -> None:
    client = _client(random_server)
    resp = client.chat.completions.create(
        model="tiny",
        messages=MESSAGES,
        max_tokens=7,
        logprobs=True,
        top_logprobs=2,
        temperature=0.0,
        extra_body={"return_token_ids": True, "ignore_eos": True},
        extra_headers={"X-Request-Id": "ep1.0"},
    )
    assert resp.id == "chatcmpl-ep1.0"
    assert _extra(resp, "prompt_token_ids") == prompt_ids(MESSAGES)
    assert _extra(resp, "policy_version") == 0
    choice = resp.choices[0]
    ids = _extra(choice, "token_ids")
    assert len(ids) == 7 and choice.finish_reason == "length"
    assert choice.logprobs is not None and choice.logprobs.content is not None
    entries = choice.logprobs.content
    assert len(entries) == 7
    for entry in entries:
        assert len(entry.top_logprobs) == 2
        assert entry.top_logprobs[0].logprob >= entry.logprob - 1e-6  # greedy: the top token
    assert resp.usage is not None and resp.usage.completion_tokens == 7


def test_streaming_concatenates_to_the_non_streaming_result(random_server) -> None:
    client = _client(random_server)
    common: dict[str, Any] = {
        "model": "tiny",
        "messages": MESSAGES,
        "max_tokens": 24,
        "seed": 11,
        "temperature": 0.9,
        "logprobs": True,
        "extra_body": {"return_token_ids": True, "ignore_eos": True},
    }
    full = client.chat.completions.create(**common)
    stream = client.chat.completions.create(
        **common, stream=True, stream_options={"include_usage": True}
    )
    ids: list[int] = []
    content = ""
    logprobs: list[float] = []
    prompt: list[int] | None = None
    usage = None
    finish = None
    for chunk in stream:
        extra = chunk.model_extra or {}
        if "prompt_token_ids" in extra:
            assert prompt is None, "prompt ids must come once"
            prompt = extra["prompt_token_ids"]
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            ids += (choice.model_extra or {}).get("token_ids") or []
            content += choice.delta.content or ""
            if choice.logprobs and choice.logprobs.content:
                logprobs += [e.logprob for e in choice.logprobs.content]
            finish = choice.finish_reason or finish
    assert prompt == _extra(full, "prompt_token_ids")
    assert ids == _extra(full.choices[0], "token_ids")
    assert content == full.choices[0].message.content
    assert full.choices[0].logprobs is not None and full.choices[0].logprobs.content is not None
    expected = [e.logprob for e in full.choices[0].logprobs.content]
    assert max(abs(a - b) for a, b in zip(logprobs, expected, strict=True)) < 1e-4
    assert finish == "length" and usage is not None and usage.completion_tokens == 24


def test_stop_and_n_through_the_api(random_server) -> None:
    client = _client(random_server)
    base = client.chat.completions.create(
        model="tiny",
        messages=MESSAGES,
        max_tokens=20,
        temperature=0.0,
        extra_body={"ignore_eos": True},
    )
    text = base.choices[0].message.content or ""
    stop = text[6:8]
    resp = client.chat.completions.create(
        model="tiny",
        messages=MESSAGES,
        max_tokens=20,
        temperature=0.0,
        stop=[stop],
        extra_body={"ignore_eos": True},
    )
    assert resp.choices[0].finish_reason == "stop"
    assert _extra(resp.choices[0], "stop_reason") == stop
    assert resp.choices[0].message.content == text[: text.find(stop)]
    two = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=6, n=2, seed=5)
    assert len(two.choices) == 2


def test_tool_call_is_parsed_from_real_model_output(tool_server, tool_case) -> None:
    client = _client(tool_server)
    resp = client.chat.completions.create(
        model="tiny",
        messages=tool_case.question,
        tools=[tool_case.tool],
        temperature=0.0,
        max_tokens=80,
        extra_body={"return_token_ids": True},
    )
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    call = calls[0]
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == "calculator"
    assert json.loads(call.function.arguments) == {"expression": "3*4"}
    # without tools in the request the same text stays plain content
    plain = client.chat.completions.create(
        model="tiny", messages=tool_case.question, temperature=0.0, max_tokens=80
    )
    assert plain.choices[0].message.tool_calls is None


def test_tool_result_history_is_rendered_and_answered(tool_server, tool_case, prompt_ids) -> None:
    client = _client(tool_server)
    resp = client.chat.completions.create(
        model="tiny",
        messages=tool_case.history,
        tools=[tool_case.tool],
        temperature=0.0,
        max_tokens=40,
        extra_body={"return_token_ids": True},
    )
    assert _extra(resp, "prompt_token_ids") == prompt_ids(tool_case.history, [tool_case.tool])
    assert resp.choices[0].message.content == tool_case.answer
    assert resp.choices[0].finish_reason == "stop"


def test_streamed_tool_call(tool_server, tool_case) -> None:
    client = _client(tool_server)
    stream = client.chat.completions.create(
        model="tiny",
        messages=tool_case.question,
        tools=[tool_case.tool],
        temperature=0.0,
        max_tokens=80,
        stream=True,
        extra_body={"return_token_ids": True},
    )
    content, calls, finish, ids = "", [], None, []
    for chunk in stream:
        for choice in chunk.choices:
            content += choice.delta.content or ""
            calls += choice.delta.tool_calls or []
            finish = choice.finish_reason or finish
            ids += (choice.model_extra or {}).get("token_ids") or []
    assert content == "" and finish == "tool_calls"
    assert len(calls) == 1 and calls[0].function.name == "calculator"
    assert json.loads(calls[0].function.arguments) == {"expression": "3*4"}
    assert len(ids) > 10


def test_concurrent_requests_share_forward_passes(random_server) -> None:
    client = _client(random_server)
    results: list[Any] = [None] * 8

    def call(i: int) -> None:
        results[i] = client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "q" * (i + 1)}],
            max_tokens=30,
            extra_body={"ignore_eos": True},
        )

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(r is not None and r.usage.completion_tokens == 30 for r in results)
    assert random_server.engine.stats.max_rows >= 4


def test_hot_swap_bumps_policy_version_in_responses(fresh_random_model, tokenizer) -> None:
    with InferenceServer(
        fresh_random_model, tokenizer, model_name="tiny", policy_version=7
    ) as server:
        body = json.dumps(
            {
                "model": "tiny",
                "messages": MESSAGES,
                "max_tokens": 8,
                "temperature": 0,
                "ignore_eos": True,
            }
        )

        def ask() -> tuple[str, dict[str, Any]]:
            req = urllib.request.Request(
                f"{server.url}/v1/chat/completions",
                body.encode(),
                {"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.headers[POLICY_VERSION_HEADER], json.loads(resp.read())

        header, before = ask()
        assert header == "7" and before["policy_version"] == 7
        state = {k: torch.randn_like(v) * 0.3 for k, v in fresh_random_model.state_dict().items()}
        assert server.update_weights(state) == 8
        header, after = ask()
        assert header == "8" and after["policy_version"] == 8
        assert (
            after["choices"][0]["message"]["content"] != before["choices"][0]["message"]["content"]
        )


def test_bad_requests_get_openai_errors(random_server) -> None:
    client = _client(random_server)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=600)
    assert "max_model_len=512" in str(info.value)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="other", messages=MESSAGES, max_tokens=5)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="tiny", messages=MESSAGES, top_p=1.5)
    assert "top_p" in str(info.value)
    req = urllib.request.Request(
        f"{random_server.url}/v1/chat/completions",
        b"{not json",
        {"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as http:
        urllib.request.urlopen(req, timeout=30)
    assert http.value.code == 400
    assert "not valid JSON" in json.loads(http.value.read())["error"]["message"]


def test_completions_streaming_and_prompt_lists(random_server, tokenizer) -> None:
    client = _client(random_server)
    common: dict[str, Any] = {
        "model": "tiny",
        "max_tokens": 12,
        "seed": 2,
        "extra_body": {"return_token_ids": True, "ignore_eos": True},
    }
    full = client.completions.create(prompt="Once upon", **common)
    text, ids, prompts = "", [], []
    for chunk in client.completions.create(prompt="Once upon", stream=True, **common):
        for choice in chunk.choices:
            text += choice.text
            extra = choice.model_extra or {}
            ids += extra.get("token_ids") or []
            if "prompt_token_ids" in extra:
                prompts.append(extra["prompt_token_ids"])
    assert text == full.choices[0].text
    assert ids == _extra(full.choices[0], "token_ids")
    assert prompts == [tokenizer("Once upon")["input_ids"]]
    many = client.completions.create(prompt=["a", "bc"], n=2, **common)
    assert [c.index for c in many.choices] == [0, 1, 2, 3]
    assert _extra(many.choices[2], "prompt_token_ids") == tokenizer("bc")["input_ids"]
    assert many.usage is not None and many.usage.completion_tokens == 48


def test_n_above_batch_size_is_refused(tokenizer, random_model) -> None:
    with InferenceServer(random_model, tokenizer, model_name="tiny", max_batch_size=2) as server:
        with pytest.raises(openai.BadRequestError) as info:
            _client(server).chat.completions.create(model="tiny", messages=MESSAGES, n=3)
        assert "max_batch_size" in str(info.value)
