"""The gateway's exact-continuity mode against the embedded server (real gateway on loopback,
real ``InferenceServer`` serving the overfitted ``tool_model``): the tool turn that re-rendering
breaks with vLLM is served token-in through the server's ``/tokenize`` and ``/v1/completions``,
answered as chat (tool calls parsed by the shared parser), and the two calls merge into one
exact row. (This model's template renders its own tool call exactly as generated, so here the
plain path merges too; the break it fixes is measured against real vLLM in
``tests/integration/test_real_vllm_continuity.py``.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from fulmen.batch import build_batch, group_records
from fulmen.credit import BroadcastAssigner
from fulmen.gateway import Gateway
from fulmen.protocol import EpisodeStatus, Reward, Task, TerminationReason, Transition
from fulmen.store import open_store
from fulmen_local.server import InferenceServer


@pytest.fixture(scope="module")
def tool_server(tool_model, tokenizer) -> Iterator[InferenceServer]:
    with InferenceServer(tool_model, tokenizer, model_name="tiny") as server:
        yield server


def _episode(server: InferenceServer, store_path: Path, tool_case: Any, continuity: bool) -> tuple[list[Transition], dict[str, Any], Any]:
    """The agent's tool loop (question, tool call, tool result, answer) through a gateway."""
    store = open_store(store_path)
    with Gateway(store, server.url, continuity=continuity) as gateway:
        episode_id = gateway.start_episode(Task(id="calc")).id
        with openai.OpenAI(base_url=f"{gateway.url}/rollout/{episode_id}/v1", api_key="x", timeout=60, max_retries=0) as llm:
            messages: list[Any] = list(tool_case.question)
            first = llm.chat.completions.create(model="tiny", messages=messages, tools=[tool_case.tool], temperature=0.0, max_tokens=60)
            call = first.choices[0].message
            assert call.tool_calls, call
            messages += [call.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call.tool_calls[0].id, "content": "12"}]
            answer = llm.chat.completions.create(model="tiny", messages=messages, tools=[tool_case.tool], temperature=0.0, max_tokens=60)
        gateway.add_reward(Reward(episode_id=episode_id, value=1.0))
        gateway.finish_episode(episode_id, status=EpisodeStatus.SUCCEEDED, termination=TerminationReason.COMPLETED)
        stats = {"continued": gateway.continuity_stats.continued, **gateway.continuity_stats.fallbacks}
        records = store.records([episode_id])
    store.close()
    batch = build_batch(group_records(records), BroadcastAssigner(), mode="merged")
    return list(records[0].transitions), {**stats, **batch.stats}, answer


def test_a_tool_turn_is_served_token_in_and_merges(tool_server, tool_case, tmp_path: Path) -> None:
    calls, after, answer = _episode(tool_server, tmp_path / "exact.db", tool_case, continuity=True)
    assert after["continued"] == 1 and after["no_anchor"] == 1
    assert after["merged_calls"] == 1 and after["merge_breaks"] == 0
    first, second = calls
    head = first.prompt_token_ids + first.response_token_ids
    assert second.prompt_token_ids[: len(head)] == head
    assert second.metadata["continues"] == first.request_id
    assert second.flags == ("token_in",) and first.flags == ()
    assert second.response_logprobs is not None and len(second.response_logprobs) == len(second.response_token_ids)
    assert answer.choices[0].message.content == second.response_message["content"]
    assert answer.id == f"chatcmpl-{second.request_id}"
