"""A retry after a lost answer: the agent's client gave up on a call (its timeout) and sent it
again. What is recorded equals what the agent received: the call whose answer never reached the
agent is not recorded as a call (a failed call ``agent_gone`` is, not an infrastructure failure,
so the episode is still scored), and the retry is a new call, recorded once.

Real gateway and runner, the vLLM wire-format double upstream (answering the first call late),
the real openai client (the agent gives up on its first call once the upstream has it, closing
the connection, then sends it again: what the openai client's own ``max_retries`` does after a
timeout), real SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest
from fulmen.context import EpisodeContext
from fulmen.protocol import EpisodeStatus, Task
from fulmen.runner import Runner
from fulmen_testkit.harness import Stack, running_stack
from fulmen_testkit.vllm_double import Faults

RECEIVED: dict[str, tuple[str, str]] = {}
LATE_S = 1.0
"""The upstream answers each episode's first call this late (the agent gives up before)."""


class FirstCallLate(Faults):
    """The upstream answers each episode's first call (seq 0) late: after the agent gave up."""

    def applies(self, request_id: str) -> bool:
        return request_id.endswith(".0")


@pytest.mark.parametrize("stream", [False, True])
def test_a_retried_call_is_recorded_once_as_the_agent_received_it(
    tmp_path: Path, stream: bool
) -> None:
    RECEIVED.clear()
    stack_box: list[Stack] = []

    async def ask(client: openai.AsyncOpenAI, ctx: EpisodeContext) -> tuple[str, str]:
        request: dict[str, Any] = {
            "model": "tiny",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 6,
        }
        if stream:
            chunks = [c async for c in await client.chat.completions.create(**request, stream=True)]
            return chunks[0].id, "".join(
                c.choices[0].delta.content or "" for c in chunks if c.choices
            )
        out = await client.chat.completions.create(**request)
        return out.id, out.choices[0].message.content or ""

    async def until(check: Callable[[], bool]) -> None:
        for _ in range(400):
            if check():
                return
            await asyncio.sleep(0.025)
        raise AssertionError("waited 10 s")

    async def agent(task: Task, ctx: EpisodeContext) -> str:
        store, double = stack_box[0].store, stack_box[0].double
        lost = f"{ctx.episode_id}.0"
        async with openai.AsyncOpenAI(
            base_url=ctx.base_url, api_key=ctx.api_key, timeout=20, max_retries=0
        ) as client:
            first = asyncio.create_task(ask(client, ctx))
            # the agent gives up once the call is at the upstream: its answer is lost
            await until(lambda: any(r.request_id == lost for r in double.received))
            first.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await first
            RECEIVED[ctx.episode_id] = await ask(client, ctx)  # the retry
        # the episode goes on until the lost answer has come back to the gateway
        await until(
            lambda: (
                bool(store.failed_calls(ctx.episode_id))
                or len(store.transitions(ctx.episode_id)) > 1
            )
        )
        return RECEIVED[ctx.episode_id][1]

    async def main() -> None:
        async with running_stack(tmp_path / "s.db") as stack:
            stack_box.append(stack)
            stack.double.faults = FirstCallLate(delay_s=LATE_S)
            runner = Runner(stack.gateway, concurrency=4, timeout_s=30, max_attempts=1)
            results = await asyncio.to_thread(
                runner.run, agent, [Task(id=f"t{i}") for i in range(4)]
            )
            for r in results:
                episode = r.episode.id
                assert r.episode.status is EpisodeStatus.SUCCEEDED, r.episode.error
                response_id, text = RECEIVED[episode]
                calls = stack.store.transitions(episode)
                # exactly what the agent received: one call, the retry's
                assert [
                    (f"chatcmpl-{t.request_id}", t.response_message.get("content")) for t in calls
                ] == [(response_id, text)]
                assert response_id == f"chatcmpl-{episode}.1"  # seq 0 was the lost answer's
                (lost,) = stack.store.failed_calls(episode)
                assert (lost.request_id, lost.reason, lost.infrastructure) == (
                    f"{episode}.0",
                    "agent_gone",
                    False,
                )
            assert len(stack.double.received) == 8  # each call reached the upstream twice

    asyncio.run(main())
