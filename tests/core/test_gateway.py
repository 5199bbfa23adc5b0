"""The capture gateway records every LLM call exactly: attribution, token ids, streaming parity.

Real servers on 127.0.0.1 (the vLLM wire-format test double upstream, the gateway), a real
SQLite store in tmp_path, the real openai client and raw aiohttp requests.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from fulmen.gateway import Gateway
from fulmen.protocol import Task, Transition
from fulmen.store import open_store
from fulmen_testkit.harness import Stack, running_stack
from fulmen_testkit.vllm_double import VllmDouble

TIMEOUT = aiohttp.ClientTimeout(total=20)
CALCULATOR = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate arithmetic",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string"}},
            "required": ["expression"],
        },
    },
}


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


def client(stack: Stack, episode_id: str, http: Any = None) -> openai.AsyncOpenAI:
    """An OpenAI client for the episode (``http``: a shared HTTP client; building one costs
    about 0.1 s of CPU, too much for 64 episodes on 2 cores)."""
    return openai.AsyncOpenAI(
        base_url=stack.base_url(episode_id), api_key="x", timeout=20, max_retries=0,
        http_client=http,
    )  # fmt: skip


async def start(stack: Stack, task_id: str = "t") -> str:
    episode = await asyncio.to_thread(stack.gateway.start_episode, Task(id=task_id))
    return episode.id


def comparable(t: Transition) -> dict[str, Any]:
    """A record without what legitimately differs between two calls of the same request."""
    data = t.to_dict()
    for key in ("seq", "request_id", "started_at", "ended_at", "upstream_latency_s"):
        del data[key]
    data["flags"] = [f for f in data["flags"] if f != "stream"]
    return data


def test_64_concurrent_episodes_attributed_with_upstream_token_ids(tmp_path: Path) -> None:
    async def episode(stack: Stack, http: Any, i: int) -> None:
        episode_id = await start(stack, f"task-{i}")
        llm = client(stack, episode_id, http)
        messages = [{"role": "user", "content": f"I am episode number {i}"}]
        whole = await llm.chat.completions.create(
            model="tiny", messages=messages, seed=i, max_tokens=12,  # type: ignore[arg-type]
            extra_body={"return_token_ids": True},
        )  # fmt: skip
        stream = await llm.chat.completions.create(
            model="tiny", messages=messages, seed=i + 1000, max_tokens=12, stream=True,  # type: ignore[arg-type]
            extra_body={"return_token_ids": True},
        )  # fmt: skip
        streamed: list[int] = []
        prompt: list[int] = []
        async for chunk in stream:
            extra = chunk.model_dump()
            prompt += extra.get("prompt_token_ids") or []
            for choice in extra["choices"]:
                streamed += choice.get("token_ids") or []
        records = await asyncio.to_thread(stack.store.transitions, episode_id)
        assert [t.seq for t in records] == [0, 1]
        assert [t.request_id for t in records] == [f"{episode_id}.0", f"{episode_id}.1"]
        for t in records:
            assert t.episode_id == episode_id
            assert t.request_messages[0]["content"] == f"I am episode number {i}"
            assert t.trainable and "no_logprobs" not in t.flags
            assert len(t.response_logprobs or ()) == len(t.response_token_ids)
        body = whole.model_dump()
        assert whole.id == f"chatcmpl-{episode_id}.0"
        assert list(records[0].prompt_token_ids) == body["prompt_token_ids"]
        assert list(records[0].response_token_ids) == body["choices"][0]["token_ids"]
        assert records[0].response_message["content"] == whole.choices[0].message.content
        assert list(records[1].prompt_token_ids) == prompt == body["prompt_token_ids"]
        assert list(records[1].response_token_ids) == streamed
        assert "stream" in records[1].flags

    async def main() -> None:
        async with running_stack(tmp_path / "store.db") as stack:
            async with openai.DefaultAsyncHttpx2Client(timeout=20) as http:
                await asyncio.gather(*(episode(stack, http, i) for i in range(64)))
            sent = {r.request_id for r in stack.double.received}
            episodes = stack.store.list_episodes()
            assert len(episodes) == 64
            assert sent == {f"{e.id}.{s}" for e in episodes for s in (0, 1)}
            assert all(r.body["return_token_ids"] is True for r in stack.double.received)

    run(main())


@pytest.mark.parametrize("store_writes", ["inline", "thread"])
def test_stream_and_non_stream_records_are_identical(tmp_path: Path, store_writes: str) -> None:
    requests: list[dict[str, Any]] = [
        {"messages": [{"role": "user", "content": "hello"}], "seed": 5, "max_tokens": 20},
        {"messages": [{"role": "user", "content": "3 times 4?"}], "tools": [CALCULATOR], "seed": 2},
        {"messages": [{"role": "user", "content": "two"}], "n": 2, "seed": 3, "max_tokens": 6},
        {"messages": [{"role": "user", "content": "x"}], "logprobs": True, "top_logprobs": 2},
    ]

    async def main() -> None:
        async with running_stack(tmp_path / "store.db", store_writes=store_writes) as stack:
            for request in requests:
                episode_id = await start(stack)
                async with client(stack, episode_id) as llm:
                    await llm.chat.completions.create(model="tiny", **request)
                    stream = await llm.chat.completions.create(model="tiny", stream=True, **request)
                    async for _ in stream:
                        pass
                records = stack.store.transitions(episode_id)
                n = request.get("n", 1)
                assert len(records) == 2 * n
                plain, streamed = records[:n], records[n:]
                assert [comparable(a) for a in plain] == [comparable(b) for b in streamed]
                assert all("stream" in t.flags for t in streamed)
                assert all("stream" not in t.flags for t in plain)
                assert all(t.trainable for t in records)

    run(main())


def test_n2_choices_get_consecutive_seqs_and_one_request_id(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_stack(tmp_path / "store.db") as stack:
            episode_id = await start(stack)
            async with client(stack, episode_id) as llm:
                reply = await llm.chat.completions.create(
                    model="tiny", messages=[{"role": "user", "content": "hi"}], n=2, seed=1
                )
                await llm.chat.completions.create(
                    model="tiny", messages=[{"role": "user", "content": "again"}]
                )
            records = stack.store.transitions(episode_id)
            assert [t.seq for t in records] == [0, 1, 2]
            assert [t.request_id for t in records] == [f"{episode_id}.0"] * 2 + [f"{episode_id}.2"]
            assert [t.metadata["choice_index"] for t in records] == [0, 1, 0]
            assert records[0].prompt_token_ids == records[1].prompt_token_ids
            assert records[0].response_token_ids != records[1].response_token_ids
            for record, choice in zip(records, reply.choices, strict=False):
                assert record.response_message["content"] == choice.message.content

    run(main())


def test_tool_call_turns_are_recorded(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_stack(tmp_path / "store.db") as stack:
            episode_id = await start(stack)
            messages: list[Any] = [{"role": "user", "content": "What is 3 times 4?"}]
            async with client(stack, episode_id) as llm:
                first = await llm.chat.completions.create(
                    model="tiny",
                    messages=messages,
                    tools=[CALCULATOR],  # type: ignore[list-item]
                )
                call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
                assert first.choices[0].finish_reason == "tool_calls"
                messages += [first.choices[0].message.model_dump(exclude_none=True),
                             {"role": "tool", "tool_call_id": call.id, "content": "12"}]  # fmt: skip
                stream = await llm.chat.completions.create(  # pyright: ignore[reportCallIssue]  # plain dicts
                    model="tiny",
                    messages=messages,
                    tools=[CALCULATOR],  # pyright: ignore[reportArgumentType]  # a plain dict
                    stream=True,
                )
                text = "".join(
                    [c.choices[0].delta.content or "" async for c in stream if c.choices]
                )
            assert text == "The answer is 12."
            turn1, turn2 = stack.store.transitions(episode_id)
            assert turn1.finish_reason == "tool_calls" and turn1.request_tools == (CALCULATOR,)
            (recorded,) = turn1.tool_calls
            assert recorded["id"] == call.id and recorded["function"]["name"] == "calculator"
            assert json.loads(recorded["function"]["arguments"]) == json.loads(
                call.function.arguments  # pyright: ignore[reportAttributeAccessIssue]  # a function call
            )
            assert turn1.response_message["tool_calls"] == [recorded]
            assert turn1.response_message["content"] is None
            assert turn2.request_messages[-1] == {
                "role": "tool",
                "tool_call_id": call.id,
                "content": "12",
            }
            assert turn2.response_message == {"role": "assistant", "content": "The answer is 12."}
            assert turn2.finish_reason == "stop" and turn2.tool_calls == ()

    run(main())


def test_agent_gets_only_what_it_asked_for(tmp_path: Path) -> None:
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}

    async def main() -> None:
        async with (
            running_stack(tmp_path / "store.db") as stack,
            aiohttp.ClientSession(timeout=TIMEOUT) as http,
        ):
            episode_id = await start(stack)
            url = stack.base_url(episode_id) + "/chat/completions"
            async with http.post(url, json=body) as response:
                plain = await response.json()
            async with http.post(
                url, json={**body, "return_token_ids": True, "logprobs": True}
            ) as response:
                full = await response.json()
            async with http.post(url, json={**body, "stream": True}) as response:
                events = (await response.text()).split("\n\n")
            upstream = [r.body for r in stack.double.received]
            assert all(b["return_token_ids"] is True and b["logprobs"] is True for b in upstream)
            assert upstream[0]["top_logprobs"] == 0
            assert plain["prompt_token_ids"] is None and plain["choices"][0]["token_ids"] is None
            assert plain["choices"][0]["logprobs"] is None
            assert full["prompt_token_ids"] and full["choices"][0]["token_ids"]
            assert len(full["choices"][0]["logprobs"]["content"]) == len(
                full["choices"][0]["token_ids"]
            )
            chunks = [json.loads(e[6:]) for e in events if e.startswith("data: {")]
            assert events[-2] == "data: [DONE]" and chunks
            assert all("prompt_token_ids" not in c for c in chunks)
            assert all(
                "token_ids" not in ch and ch["logprobs"] is None
                for c in chunks
                for ch in c["choices"]
            )
            assert [t.trainable for t in stack.store.transitions(episode_id)] == [True] * 3

    run(main())


def test_completions_endpoint_records_each_prompt(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_stack(tmp_path / "store.db") as stack:
            episode_id = await start(stack)
            async with client(stack, episode_id) as llm:
                reply = await llm.completions.create(
                    model="tiny",
                    prompt=["The answer is", "Two plus two"],
                    n=2,
                    max_tokens=5,
                    seed=4,
                )
                single = {"model": "tiny", "prompt": "The answer is", "max_tokens": 5, "seed": 4}
                await llm.completions.create(**single)
                stream = await llm.completions.create(**single, stream=True)
                streamed = "".join([c.choices[0].text async for c in stream if c.choices])
            records = stack.store.transitions(episode_id)
            assert [t.seq for t in records] == [0, 1, 2, 3, 4, 5]
            prompts = [t.request_messages[0]["content"] for t in records]
            assert prompts == ["The answer is"] * 2 + ["Two plus two"] * 2 + ["The answer is"] * 2
            assert [t.response_message["content"] for t in records[:4]] == [
                c.text for c in reply.choices
            ]
            assert comparable(records[4]) == comparable(records[5])
            assert records[0].response_token_ids == records[4].response_token_ids  # same seed
            assert records[5].response_message["content"] == streamed
            assert all(
                t.trainable and len(t.response_logprobs or ()) == len(t.response_token_ids)
                for t in records
            )

    run(main())


def test_agent_name_lineage_tags_and_policy_version(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_stack(
            tmp_path / "store.db", double=VllmDouble(policy_version=7)
        ) as stack:
            episode_id = await start(stack)
            async with client(stack, episode_id) as llm:
                await llm.chat.completions.create(
                    model="tiny", messages=[{"role": "user", "content": "hi"}], user="planner"
                )
                await llm.chat.completions.create(
                    model="tiny", messages=[{"role": "user", "content": "hi"}], user="ignored",
                    extra_headers={"X-Fulmen-Agent": "coder", "X-Fulmen-Parent": f"{episode_id}.0",
                                   "X-Fulmen-Node": "write_code"},
                )  # fmt: skip
            first, second = stack.store.transitions(episode_id)
            assert (first.agent, first.parent_id, first.policy_version) == ("planner", None, 7)
            assert (second.agent, second.parent_id) == ("coder", f"{episode_id}.0")
            assert second.metadata["tags"] == {"node": "write_code"}
            assert second.metadata["params"]["user"] == "ignored"
            assert "x-fulmen-agent" not in {k.lower() for k in second.metadata}

    run(main())


def test_models_are_proxied_without_an_episode(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_stack(tmp_path / "store.db") as stack:
            async with openai.AsyncOpenAI(
                base_url=stack.url + "/v1", api_key="x", timeout=20
            ) as llm:
                models = await llm.models.list()
            assert [m.id for m in models.data] == ["tiny"]

    run(main())


def test_a_new_gateway_on_the_same_store_continues_the_episode(tmp_path: Path) -> None:
    async def main() -> None:
        double = VllmDouble()
        upstream = await double.start()
        store = open_store(tmp_path / "store.db")
        try:
            async with Gateway(store, upstream) as first:
                episode = first.start_episode(Task(id="t"))
                async with openai.AsyncOpenAI(
                    base_url=first.episode_url(episode.id) + "/v1", api_key="x", timeout=20
                ) as llm:
                    await llm.chat.completions.create(
                        model="tiny", messages=[{"role": "user", "content": "a"}]
                    )
            async with (
                Gateway(store, upstream + "/v1") as second,
                openai.AsyncOpenAI(
                    base_url=second.episode_url(episode.id) + "/v1", api_key="x", timeout=20
                ) as llm,
            ):
                await llm.chat.completions.create(
                    model="tiny", messages=[{"role": "user", "content": "b"}]
                )
            assert [t.seq for t in store.transitions(episode.id)] == [0, 1]
        finally:
            await double.stop()
            store.close()

    run(main())


def test_upstream_headers_are_sent_and_agent_headers_are_not(tmp_path: Path) -> None:
    async def main() -> None:
        options: dict[str, Any] = {"upstream_headers": {"Authorization": "Bearer upstream-key"}}
        async with running_stack(tmp_path / "store.db", **options) as stack:
            episode_id = await start(stack)
            async with client(stack, episode_id) as llm:
                await llm.chat.completions.create(
                    model="tiny", messages=[{"role": "user", "content": "hi"}],
                    extra_headers={"X-Fulmen-Agent": "a", "X-Custom": "1"},
                )  # fmt: skip
            (received,) = stack.double.received
            assert received.headers["authorization"] == "Bearer upstream-key"
            assert received.headers["x-request-id"] == f"{episode_id}.0"
            assert not {"x-custom", "x-fulmen-agent"} & set(received.headers)

    run(main())
