"""Reading AutoGen's logged events into what the adapter joins on.

AutoGen logs one event object per record on two loggers (``record.msg`` is the object):

* ``autogen_core.events`` (INFO): :class:`~autogen_core.logging.LLMCallEvent` after a
  non-streaming call (request ``messages``, the raw ``response`` dict with its ``id``, and
  ``agent_id`` inside a runtime / team), :class:`~autogen_core.logging.LLMStreamStartEvent`
  (request ``messages``) and :class:`~autogen_core.logging.LLMStreamEndEvent` (the parsed
  ``CreateResult``: content or function calls, no response id).
* ``autogen_agentchat.events`` (DEBUG): :class:`~autogen_agentchat.messages.ToolCallRequestEvent`
  (the agent's name as ``source`` and the function calls with their ids), logged before the
  tools run, and :class:`~autogen_agentchat.messages.ToolCallExecutionEvent` (the results by
  call id), logged after.

Everything here is pure: it reads event payloads and never raises on odd shapes (a value of an
unexpected type reads as "unknown").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "LlmEnd",
    "agent_name",
    "read_llm_call",
    "read_stream_end",
    "trailing_tool_call_ids",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class LlmEnd:
    """One finished LLM call as an AutoGen event shows it."""

    response_id: str | None
    """The response id (``chatcmpl-{episode}.{seq}`` through a fulmen gateway), if known."""
    agent_id: str | None
    """AutoGen's ``AgentId`` as text (``{type}/{key}``); set only inside an agent runtime."""
    tool_call_ids: tuple[str, ...]
    """Ids of the tool calls the response asked for (empty ids left out)."""
    messages: tuple[Mapping[str, Any], ...]
    """The request messages (OpenAI format), when the event carries them."""


def agent_name(agent_id: str) -> str:
    """The agent's name in an AgentChat ``AgentId`` text.

    AgentChat registers each team member as type ``{name}_{team_id}`` with key ``{team_id}``
    (and the team's manager as ``{ManagerName}_{team_id}``); other runtimes' agents keep their
    type as their name.
    """
    agent_type, _, key = agent_id.partition("/")
    suffix = f"_{key}"
    if key and agent_type.endswith(suffix) and len(agent_type) > len(suffix):
        return agent_type[: -len(suffix)]
    return agent_type


def read_llm_call(payload: Mapping[str, Any]) -> LlmEnd:
    """Read an ``LLMCallEvent``'s ``kwargs`` (the raw ChatCompletion dump as ``response``)."""
    response = _mapping(payload.get("response"))
    response_id = response.get("id")
    ids: list[str] = []
    choices = response.get("choices")
    if isinstance(choices, list) and choices:
        message = _mapping(_mapping(choices[0]).get("message"))
        calls = message.get("tool_calls")
        if isinstance(calls, list):
            ids = [_text(_mapping(call).get("id")) for call in calls]
    return LlmEnd(
        response_id=response_id if isinstance(response_id, str) and response_id else None,
        agent_id=_optional_text(payload.get("agent_id")),
        tool_call_ids=tuple(i for i in ids if i),
        messages=_messages(payload.get("messages")),
    )


def read_stream_end(
    payload: Mapping[str, Any],
    *,
    response_id: str | None,
    messages: Sequence[Mapping[str, Any]],
) -> LlmEnd:
    """Read an ``LLMStreamEndEvent``'s ``kwargs`` (a ``CreateResult`` dump as ``response``).

    The event has neither the response id nor the request messages: the caller supplies them
    (from the streaming client and the matching ``LLMStreamStartEvent``).
    """
    content = _mapping(payload.get("response")).get("content")
    ids: list[str] = []
    if isinstance(content, list):
        ids = [_text(_mapping(call).get("id")) for call in content]
    return LlmEnd(
        response_id=response_id,
        agent_id=_optional_text(payload.get("agent_id")),
        tool_call_ids=tuple(i for i in ids if i),
        messages=tuple(messages),
    )


def trailing_tool_call_ids(messages: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """The ``tool_call_id`` of each ``tool`` message at the end of ``messages`` (empty when the
    prompt does not end with tool results)."""
    ids: list[str] = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        ids.append(_text(message.get("tool_call_id")))
    return tuple(reversed(ids))


def _messages(value: object) -> tuple[Mapping[str, Any], ...]:
    if not isinstance(value, list):
        return ()
    return tuple(_mapping(m) for m in value)


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _optional_text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
