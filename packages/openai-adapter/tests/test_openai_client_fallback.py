"""The plain client adapter beyond the kit: one global client on the gateway's ``/v1`` routes
(episode from the runner's context), an explicit ``httpx`` client, calls with no episode, and
the shared transport patch."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from _oa_samples import (
    LOOKUP_TOOL,
    asolve_with_client,
    make_sdk_agent,
    solve_with_client,
)
from fulmen import EpisodeContext, Task
from fulmen.protocol import EpisodeStatus
from fulmen_openai import AgentsSDKAdapter, OpenAIClientAdapter
from fulmen_openai._transport import patched_methods
from fulmen_testkit import MODEL, TOOL_NAME, KitStack, kit_task
from openai import AsyncOpenAI, OpenAI


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[KitStack]:
    with KitStack(tmp_path) as running:
        yield running


@pytest.fixture
def adapter() -> Iterator[OpenAIClientAdapter]:
    with OpenAIClientAdapter() as attached:
        yield attached


def _check(stack: KitStack, episode_id: str, marker: str, *, framework: str = "openai") -> None:
    transitions = stack.store.transitions(episode_id)
    assert len(transitions) == 2 == stack.requests_of(episode_id)
    for t in transitions:
        assert t.metadata.get("framework") == framework, dict(t.metadata)
        assert marker in str(t.request_messages)
    results = [r for t in transitions for r in t.metadata.get("tool_results", ())]
    assert len(results) == 1, results
    assert results[0]["name"] == TOOL_NAME
    assert results[0]["output"] == f"code-of-{marker}"
    assert transitions[0].metadata.get("tool_results"), "the result belongs to the first call"


def test_global_client_in_threads_and_tasks(stack: KitStack, adapter: OpenAIClientAdapter) -> None:
    """16 concurrent episodes share one client per form (sync in the runner's threads, async in
    its tasks); each call is attributed by the context's episode and nothing mixes."""
    base_url = f"{stack.gateway.url}/v1"
    shared = OpenAI(base_url=base_url, api_key="fulmen", max_retries=0)
    shared_async = AsyncOpenAI(base_url=base_url, api_key="fulmen", max_retries=0)

    def sync_agent(task: Task, ctx: EpisodeContext) -> str | None:
        return solve_with_client(task, shared)

    async def async_agent(task: Task, ctx: EpisodeContext) -> str | None:
        return await asolve_with_client(task, shared_async)

    for agent in (sync_agent, async_agent):
        results = stack.run(agent, [kit_task(i) for i in range(16)], concurrency=16)
        for result in results:
            assert result.episode.status is EpisodeStatus.SUCCEEDED, result.episode.error
            marker = str(result.episode.task.data["marker"])
            assert result.output == f"The answer is code-of-{marker}."
            _check(stack, result.episode.id, marker)
    assert adapter.unattributed == 0
    assert adapter.failures == 0


@pytest.mark.parametrize("use_async", [False, True])
def test_explicit_httpx_client(
    stack: KitStack, adapter: OpenAIClientAdapter, use_async: bool
) -> None:
    """A client built on a legacy ``httpx`` client is captured like the default ``httpx2``.

    (openai accepts an ``httpx`` client at run time; its annotations name ``httpx2`` only.)
    """

    def sync_agent(task: Task, ctx: EpisodeContext) -> str | None:
        client = OpenAI(
            base_url=ctx.base_url,
            api_key=ctx.api_key,
            http_client=httpx.Client(),  # pyright: ignore[reportArgumentType]
            max_retries=0,
        )
        return solve_with_client(task, client)

    async def async_agent(task: Task, ctx: EpisodeContext) -> str | None:
        client = AsyncOpenAI(
            base_url=ctx.base_url,
            api_key=ctx.api_key,
            http_client=httpx.AsyncClient(),  # pyright: ignore[reportArgumentType]
            max_retries=0,
        )
        return await asolve_with_client(task, client)

    result = stack.run(async_agent if use_async else sync_agent, [kit_task(3)])[0]
    assert result.episode.status is EpisodeStatus.SUCCEEDED, result.episode.error
    _check(stack, result.episode.id, "kit-3")


def test_call_without_episode_is_flagged_not_attributed(
    stack: KitStack, adapter: OpenAIClientAdapter, caplog: pytest.LogCaptureFixture
) -> None:
    """A call from a thread that lost the runner's context is refused by the gateway and
    counted; it is never attributed to the episode that is running."""
    shared = OpenAI(base_url=f"{stack.gateway.url}/v1", api_key="fulmen", max_retries=0)
    errors: list[BaseException] = []

    def lost_thread() -> None:
        try:
            shared.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "hello"}],
                tools=[LOOKUP_TOOL],
            )
        except BaseException as exc:
            errors.append(exc)

    def agent(task: Task, ctx: EpisodeContext) -> str:
        thread = threading.Thread(target=lost_thread)  # plain threads drop contextvars
        thread.start()
        thread.join()
        return "done"

    result = stack.run(agent, [kit_task(0)])[0]
    assert result.episode.status is EpisodeStatus.SUCCEEDED, result.episode.error
    assert len(errors) == 1 and isinstance(errors[0], openai.BadRequestError)
    assert errors[0].code == "no_episode"
    assert adapter.unattributed == 1
    assert stack.store.transitions(result.episode.id) == []
    assert len(stack.double.received) == 0
    assert any("no episode" in r.getMessage() for r in caplog.records)


def test_transport_patch_is_shared_and_restored_in_any_order(stack: KitStack) -> None:
    """Both adapters share one patch; detaching in either order restores the transports, and
    an Agents SDK call is annotated by the SDK adapter only (no duplicate tool results)."""
    before = patched_methods()
    client_adapter = OpenAIClientAdapter().attach()
    sdk_adapter = AgentsSDKAdapter().attach()
    try:
        result = stack.run(make_sdk_agent(), [kit_task(5)])[0]
    finally:
        client_adapter.detach()
        assert patched_methods() != before  # still patched for the SDK adapter
        sdk_adapter.detach()
    assert patched_methods() == before
    transitions = stack.store.transitions(result.episode.id)
    assert {t.metadata.get("framework") for t in transitions} == {"openai-agents"}
    results = [r for t in transitions for r in t.metadata.get("tool_results", ())]
    assert len(results) == 1 and results[0]["output"] == "code-of-kit-5"
    assert results[0]["tool_call_id"]
    assert client_adapter.failures == sdk_adapter.failures == 0
