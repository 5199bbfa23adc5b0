"""A retry after a lost answer: the agent's client gave up on a call (its timeout) and sent it
again. What is recorded equals what the agent received: the call whose answer never reached the
agent is not recorded as a call (a failed call ``agent_gone`` is, not an infrastructure failure,
so the episode is still scored), and the retry is a new call, recorded once.

Real gateway and runner, the vLLM wire-format double upstream (answering the first call late),
the real openai client with its own retry (``max_retries=1``), real SQLite.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import openai
import pytest
from fulmen.context import EpisodeContext
from fulmen.protocol import EpisodeStatus, Task
from fulmen.runner import Runner
from fulmen_testkit.harness import running_stack
from fulmen_testkit.vllm_double import Faults

RECEIVED: dict[str, tuple[str, str]] = {}


class FirstCallLate(Faults):
    """The upstream answers each episode's first call (seq 0) late: after the agent gave up."""

    def applies(self, request_id: str) -> bool:
        return request_id.endswith(".0")


@pytest.mark.parametrize("stream", [False, True])
def test_a_retried_call_is_recorded_once_as_the_agent_received_it(
    tmp_path: Path, stream: bool
) -> None:
    RECEIVED.clear()

    async def agent(task: Task, ctx: EpisodeContext) -> str:
        async with openai.AsyncOpenAI(
            base_url=ctx.base_url, api_key=ctx.api_key, timeout=1.0, max_retries=1
        ) as client:
            request = {
                "model": "tiny",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 6,
            }
            if stream:
                chunks = [
                    c async for c in await client.chat.completions.create(**request, stream=True)
                ]
                text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                RECEIVED[ctx.episode_id] = (chunks[0].id, text)
            else:
                out = await client.chat.completions.create(**request)
                RECEIVED[ctx.episode_id] = (out.id, out.choices[0].message.content or "")
        await asyncio.sleep(1.6)  # the lost answer's upstream call ends meanwhile
        return RECEIVED[ctx.episode_id][1]

    async def main() -> None:
        async with running_stack(tmp_path / "s.db") as stack:
            stack.double.faults = FirstCallLate(delay_s=2.0)
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
