"""Life cycle and logging behaviour of the adapter, the event readers, and ``model_for``."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from _ag_samples import kit_agent, no_tool_agent
from autogen_core import EVENT_LOGGER_NAME
from fulmen import EpisodeContext
from fulmen.adapters import MODEL_TIMEOUT_S, AdapterError
from fulmen_autogen import EVENT_LOGGERS, AutoGenAdapter
from fulmen_autogen._events import agent_name, read_llm_call, trailing_tool_call_ids
from fulmen_testkit import KitStack, kit_task


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def root_handler() -> Iterator[_Collect]:
    handler = _Collect()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


def _autogen_records(handler: _Collect) -> list[str]:
    return [type(r.msg).__name__ for r in handler.records if r.name in EVENT_LOGGERS]


def test_attached_adapter_changes_no_logging_output(tmp_path: Path, root_handler: _Collect) -> None:
    """The user's handlers get exactly the AutoGen records they got without the adapter: none
    by default, the INFO events (not AgentChat's DEBUG ones) where the user opened INFO."""
    core = logging.getLogger(EVENT_LOGGER_NAME)
    with KitStack(tmp_path) as stack:
        with AutoGenAdapter():
            stack.run(kit_agent(), [kit_task(0)])
        assert _autogen_records(root_handler) == []
        core.setLevel(logging.INFO)  # the user opens AutoGen's core events
        try:
            with AutoGenAdapter():
                stack.run(kit_agent(), [kit_task(1)])
        finally:
            core.setLevel(logging.NOTSET)
    seen = _autogen_records(root_handler)
    assert seen.count("LLMCallEvent") == 2
    assert "ToolCallRequestEvent" not in seen and "ToolCallExecutionEvent" not in seen


def test_user_level_is_honoured_and_restored() -> None:
    """A level the user set before attach filters what they see and comes back on detach."""
    core = logging.getLogger(EVENT_LOGGER_NAME)
    core.setLevel(logging.WARNING)
    try:
        with AutoGenAdapter():
            assert core.level == logging.DEBUG
        assert core.level == logging.WARNING
    finally:
        core.setLevel(logging.NOTSET)


@pytest.mark.parametrize("stream", [False, True])
def test_standalone_call_named_by_its_client(tmp_path: Path, stream: bool) -> None:
    """A standalone agent's call that asks for no tool has no agent in AutoGen's events: it
    is named only when its client was made with ``model_for(..., agent=...)``."""
    with KitStack(tmp_path) as stack, AutoGenAdapter() as adapter:
        declared, anonymous = (
            stack.run(no_tool_agent(declared=flag, stream=stream), [kit_task(i)])[0]
            for i, flag in enumerate((True, False))
        )
        (named,) = stack.store.transitions(declared.episode.id)
        (unnamed,) = stack.store.transitions(anonymous.episode.id)
    assert named.agent == "assistant" and named.metadata["framework"] == "autogen"
    assert unnamed.agent is None and unnamed.metadata["framework"] == "autogen"
    assert adapter.failures == 0


def test_agent_name_from_agent_id() -> None:
    team = "8c4e0a51-2b7d-4f38-a7f1-0d2b0c6ad3e9"
    assert agent_name(f"researcher_{team}/{team}") == "researcher"
    assert agent_name(f"SelectorGroupChatManager_{team}/{team}") == "SelectorGroupChatManager"
    assert agent_name("my_agent/default") == "my_agent"
    assert agent_name(f"_{team}/{team}") == f"_{team}"


def test_event_readers_tolerate_odd_payloads() -> None:
    end = read_llm_call({"response": {"id": 3, "choices": [None]}, "messages": "x"})
    assert end.response_id is None and end.tool_call_ids == () and end.messages == ()
    messages = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "tool_calls": []},
        {"role": "tool", "tool_call_id": "a"},
        {"role": "tool", "tool_call_id": "b"},
    ]
    assert trailing_tool_call_ids(messages) == ("a", "b")
    assert trailing_tool_call_ids(messages[:2]) == ()


def test_model_for_training_defaults() -> None:
    """The episode's URL and key, a ``model_info`` for an unknown name, no ``name`` field, no
    retries, a timeout; the caller may change the last two but not the URL or key."""
    ctx = EpisodeContext(episode_id="ep-1", gateway_url="http://127.0.0.1:9")
    client = AutoGenAdapter.model_for(ctx, temperature=0.5)
    config = client.dump_component().config
    assert config["base_url"] == ctx.base_url
    assert config["api_key"].get_secret_value() == ctx.api_key
    assert config["model"] == "policy" and config["temperature"] == 0.5
    assert config["include_name_in_message"] is False
    assert config["max_retries"] == 0 and config["timeout"] == MODEL_TIMEOUT_S
    assert client.model_info["function_calling"] is True
    custom = AutoGenAdapter.model_for(ctx, "other", max_retries=2, timeout=5.0)
    config = custom.dump_component().config
    assert (config["model"], config["max_retries"], config["timeout"]) == ("other", 2, 5.0)
    with pytest.raises(AdapterError, match="api_key"):
        AutoGenAdapter.model_for(ctx, api_key="sk-elsewhere")
