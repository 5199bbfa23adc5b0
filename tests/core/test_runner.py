"""The runner through a real gateway and the vLLM double: attribution, failures, rewards."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import fulmen
import openai
from fulmen.context import EpisodeContext
from fulmen.protocol import EpisodeStatus, Task, TerminationReason
from fulmen.runner import Runner
from fulmen_testkit.harness import running_stack
from fulmen_testkit.vllm_double import Faults

TOOL = {
    "type": "function",
    "function": {
        "name": "calculator",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}},
    },
}


async def tool_agent(task: Task, ctx: EpisodeContext) -> str:
    """Asks, runs the tool call the model makes, answers (2 LLM calls per episode)."""
    async with openai.AsyncOpenAI(base_url=ctx.base_url, api_key=ctx.api_key, timeout=30) as client:
        messages: list[Any] = [{"role": "user", "content": task.data["q"]}]
        first = await client.chat.completions.create(model="tiny", messages=messages, tools=[TOOL])  # pyright: ignore[reportArgumentType]
        call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
        messages.append(first.choices[0].message.model_dump(exclude_none=True))
        messages.append({"role": "tool", "tool_call_id": call.id, "content": "42"})
        second = await client.chat.completions.create(model="tiny", messages=messages, tools=[TOOL])  # pyright: ignore[reportArgumentType]
        return second.choices[0].message.content or ""


def sync_agent(task: Task, ctx: EpisodeContext) -> str:
    with openai.OpenAI(base_url=ctx.base_url, api_key=ctx.api_key, timeout=30) as client:
        out = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": task.data["q"]}], max_tokens=8
        )
    fulmen.reward(0.25, name="format")  # from the worker thread, via the context
    return out.choices[0].message.content or ""


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_async_agents_many_episodes_attributed_and_rewarded(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_stack(tmp_path / "s.db") as stack:
            runner = Runner(
                stack.gateway, concurrency=32,
                reward_fn=lambda task, out, ctx: 1.0 if "42" in out else 0.0,
            )
            tasks = [Task(id=f"t{i}", data={"q": f"What is {i}*2?"}) for i in range(24)]
            results = await runner.arun(tool_agent, tasks, group_size=3, group_prefix="s1")
            assert len(results) == 72 and all(r.ok for r in results)
            assert [r.outcome for r in results] == [1.0] * 72
            for task_index, r in enumerate(results):
                task = tasks[task_index // 3]
                assert r.episode.group_id == f"s1:{task.id}"
                record = stack.store.record(r.episode.id)
                assert [t.seq for t in record.transitions] == [0, 1]
                assert all(t.episode_id == r.episode.id for t in record.transitions)
                assert task.data["q"] in json.dumps(record.transitions[0].request_messages)
                assert [x.value for x in record.rewards] == [1.0]
                assert record.episode.metadata["output"] == "The answer is 42."

    run(main())


def test_sync_agent_in_threads_with_reward_api(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_stack(tmp_path / "s.db") as stack:
            runner = Runner(stack.gateway, concurrency=8)
            tasks = [Task(id=f"t{i}", data={"q": f"q{i}"}) for i in range(16)]
            results = await runner.arun(sync_agent, tasks)
            for r in results:
                assert r.ok
                rewards = stack.store.rewards(r.episode.id)
                assert [(x.value, x.name) for x in rewards] == [(0.25, "format")]

    run(main())


def test_agent_error_is_retried_and_never_rewarded(tmp_path: Path) -> None:
    calls: list[int] = []

    def flaky(task: Task, ctx: EpisodeContext) -> str:
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("boom")
        return "ok"

    async def main() -> None:
        async with running_stack(tmp_path / "s.db") as stack:
            runner = Runner(stack.gateway, max_attempts=2, reward_fn=lambda t, o, c: 1.0)
            [result] = await runner.arun(flaky, [Task(id="t")])
            assert result.ok and result.attempts == 2 and result.episode.attempt == 2
            episodes = stack.store.list_episodes(task_id="t")
            failed = [e for e in episodes if e.status is EpisodeStatus.FAILED]
            assert len(failed) == 1
            assert failed[0].termination is TerminationReason.AGENT_ERROR
            assert "ValueError: boom" in (failed[0].error or "")
            assert stack.store.rewards(failed[0].id) == []

    run(main())


def test_upstream_failure_is_infrastructure_not_reward_zero(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_stack(tmp_path / "s.db") as stack:
            stack.double.faults = Faults(status_500=True)
            runner = Runner(stack.gateway, max_attempts=2, reward_fn=lambda t, o, c: 0.0)
            [result] = await runner.arun(tool_agent, [Task(id="t", data={"q": "x"})])
            assert not result.ok and result.attempts == 2
            assert result.episode.termination is TerminationReason.UPSTREAM_ERROR
            for episode in stack.store.list_episodes():
                assert episode.termination is TerminationReason.UPSTREAM_ERROR
                assert stack.store.rewards(episode.id) == []

    run(main())


def test_timeout_ends_episode_without_reward(tmp_path: Path) -> None:
    async def slow(task: Task, ctx: EpisodeContext) -> None:
        await asyncio.sleep(5)

    async def main() -> None:
        async with running_stack(tmp_path / "s.db") as stack:
            runner = Runner(stack.gateway, timeout_s=0.2, max_attempts=1, reward_fn=lambda t, o, c: 1.0)
            [result] = await runner.arun(slow, [Task(id="t")])
            assert result.episode.status is EpisodeStatus.TIMED_OUT
            assert stack.store.rewards(result.episode.id) == []

    run(main())


def test_reward_from_a_subprocess_that_only_knows_the_url(tmp_path: Path) -> None:
    def agent(task: Task, ctx: EpisodeContext) -> int:
        code = "import fulmen; fulmen.reward(0.7, step=0, name='sub')"
        env = {**ctx.env(), "PATH": "/usr/bin:/bin"}
        return subprocess.run([sys.executable, "-c", code], env=env, timeout=60, check=True).returncode

    async def main() -> None:
        async with running_stack(tmp_path / "s.db") as stack:
            [result] = await Runner(stack.gateway).arun(agent, [Task(id="t")])
            assert result.ok
            [reward] = stack.store.rewards(result.episode.id)
            assert (reward.value, reward.step, reward.name) == (0.7, 0, "sub")

    run(main())


def test_sampling_overrides_reach_the_upstream(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_stack(tmp_path / "s.db") as stack:
            runner = Runner(stack.gateway)
            await runner.arun(
                tool_agent, [Task(id="t", data={"q": "x"})],
                episode_metadata=lambda task, k: {"sampling": {"temperature": 0.0, "seed": 100}},
            )
            bodies = [r.body for r in stack.double.received if r.path.endswith("/chat/completions")]
            assert [(b["temperature"], b["seed"]) for b in bodies] == [(0.0, 100), (0.0, 101)]

    run(main())


def test_invalid_arguments() -> None:
    import pytest

    with pytest.raises(ValueError, match="concurrency must be >= 1"):
        Runner(None, concurrency=0)  # type: ignore[arg-type]
