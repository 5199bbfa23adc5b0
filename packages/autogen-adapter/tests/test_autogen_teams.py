"""Teams: agent names from AutoGen's agent ids, the selector's own call, concurrent episodes,
streaming inside a team, and a client the user built."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _ag_samples import plain_client_agent, selector_responder, team_agent
from fulmen.protocol import EpisodeStatus, Transition
from fulmen.runner import EpisodeResult
from fulmen_autogen import AutoGenAdapter
from fulmen_testkit import TOOL_NAME, TOOL_REWARD, KitStack, kit_task


@pytest.fixture
def adapter() -> Iterator[AutoGenAdapter]:
    with AutoGenAdapter() as attached:
        yield attached


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[KitStack]:
    with KitStack(tmp_path, responder=selector_responder) as running:
        yield running


def _transitions(stack: KitStack, result: EpisodeResult) -> list[Transition]:
    assert result.episode.status is EpisodeStatus.SUCCEEDED, result.episode.error
    transitions = stack.store.transitions(result.episode.id)
    assert len(transitions) == stack.requests_of(result.episode.id)
    marker = str(result.episode.task.data["marker"])
    for t in transitions:
        assert t.trainable, t.request_id
        assert marker in str(t.request_messages)
        assert t.metadata.get("framework") == "autogen", dict(t.metadata)
    return transitions


def _check_round_robin(stack: KitStack, result: EpisodeResult) -> None:
    """researcher: tool call (with its result), then its answer; then writer's one call."""
    transitions = _transitions(stack, result)
    marker = str(result.episode.task.data["marker"])
    assert [t.agent for t in transitions] == ["researcher", "researcher", "writer"]
    for t in transitions:
        agent_id = str(t.metadata.get("autogen_agent_id"))
        assert agent_id.startswith(f"{t.agent}_"), agent_id
    (first, second, third) = transitions
    (item,) = first.metadata["tool_results"]
    assert item["name"] == TOOL_NAME and item["output"] == f"code-of-{marker}"
    assert "tool_results" not in second.metadata and "tool_results" not in third.metadata
    rewards = [r for r in stack.store.rewards(result.episode.id) if r.name == "tool"]
    assert [(r.value, r.step) for r in rewards] == [(TOOL_REWARD, first.seq)]


def test_round_robin_team_names_each_agent(stack: KitStack, adapter: AutoGenAdapter) -> None:
    """Inside a team, every call carries its agent's name (from AutoGen's agent id)."""
    result = stack.run(team_agent("round_robin"), [kit_task(0, "reward")])[0]
    _check_round_robin(stack, result)
    assert adapter.failures == 0


def test_selector_call_is_the_managers(stack: KitStack, adapter: AutoGenAdapter) -> None:
    """The selector's speaker-selection call belongs to the team's manager
    (``SelectorGroupChatManager``), never to a participant."""
    result = stack.run(team_agent("selector"), [kit_task(0)])[0]
    transitions = _transitions(stack, result)
    agents = [t.agent for t in transitions]
    assert agents == ["SelectorGroupChatManager", "researcher", "researcher", "writer"]
    selector = transitions[0]
    assert "select the next role" in str(selector.request_messages)
    assert str(selector.metadata["autogen_agent_id"]).startswith("SelectorGroupChatManager_")
    assert "tool_results" not in selector.metadata
    assert transitions[1].metadata["tool_results"][0]["name"] == TOOL_NAME


@pytest.mark.slow
def test_concurrent_team_episodes_never_mix(stack: KitStack, adapter: AutoGenAdapter) -> None:
    """16 team episodes at once: names, tool results and rewards stay in their episode."""
    tasks = [kit_task(i, "reward") for i in range(16)]
    results = stack.run(team_agent("round_robin"), tasks, concurrency=16)
    for result in results:
        _check_round_robin(stack, result)
    assert adapter.failures == 0


def test_streaming_team_is_annotated(stack: KitStack, adapter: AutoGenAdapter) -> None:
    """Streaming agents in a team (``model_client_stream=True``) are joined like the others."""
    result = stack.run(team_agent("round_robin", stream=True), [kit_task(0, "reward")])[0]
    _check_round_robin(stack, result)
    assert all("stream" in t.flags for t in stack.store.transitions(result.episode.id))


def test_user_built_client(stack: KitStack, adapter: AutoGenAdapter) -> None:
    """A plain ``OpenAIChatCompletionClient``: non-streaming calls are annotated; streaming
    calls are recorded with exact tokens but not annotated (AutoGen's stream events carry no
    response id; ``AutoGenAdapter.model_for`` is needed for those)."""
    plain = stack.run(plain_client_agent(stream=False), [kit_task(0)])[0]
    assert [t.agent for t in _transitions(stack, plain)] == ["assistant", "assistant"]
    streamed = stack.run(plain_client_agent(stream=True), [kit_task(1)])[0]
    assert streamed.episode.status is EpisodeStatus.SUCCEEDED
    transitions = stack.store.transitions(streamed.episode.id)
    assert len(transitions) == 2 and all(t.trainable for t in transitions)
    assert stack.store.annotations(streamed.episode.id) == []
    assert adapter.failures == 0
