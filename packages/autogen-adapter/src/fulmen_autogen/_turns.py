"""Per-asyncio-task join state: which LLM call asked for which tool call.

AutoGen logs an agent's LLM call, its ``ToolCallRequestEvent``, its
``ToolCallExecutionEvent`` and the agent's next LLM call from the same asyncio task (the one
running that agent's turn). Keying the state by that task keeps concurrent episodes and
concurrently running agents apart even when two of them get the same tool-call ids (ids
generated from the prompt, identical across a GRPO group). The state of a task is dropped
with the task.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PendingCall", "Turns"]

_MAX_PENDING = 1024
"""Tool calls remembered per task (a bound for tasks that run many turns without a join)."""


@dataclass(slots=True, kw_only=True)
class PendingCall:
    """An LLM call whose tool calls have not all been joined yet."""

    response_id: str
    """The call's response id."""
    agent: str | None
    """The agent that made it, once known."""


@dataclass(slots=True)
class _TaskState:
    tool_calls: dict[str, PendingCall] = field(default_factory=dict)
    stream_messages: tuple[Mapping[str, Any], ...] = ()


class Turns:
    """The join state of every task, thread-safe. Calls outside a running asyncio task have no
    state (nothing is joined across them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tasks: weakref.WeakKeyDictionary[asyncio.Task[Any], _TaskState] = (
            weakref.WeakKeyDictionary()
        )

    def clear(self) -> None:
        """Forget everything (on detach)."""
        with self._lock:
            self._tasks.clear()

    def _state(self, create: bool) -> _TaskState | None:
        try:
            task = asyncio.current_task()
        except RuntimeError:  # no event loop in this thread
            return None
        if task is None:
            return None
        with self._lock:
            state = self._tasks.get(task)
            if state is None and create:
                state = self._tasks[task] = _TaskState()
            return state

    def remember(self, call: PendingCall, tool_call_ids: Sequence[str]) -> None:
        """Note that ``call`` asked for ``tool_call_ids``."""
        state = self._state(create=bool(tool_call_ids))
        if state is None:
            return
        with self._lock:
            for tool_call_id in tool_call_ids:
                state.tool_calls[tool_call_id] = call
            while len(state.tool_calls) > _MAX_PENDING:
                del state.tool_calls[next(iter(state.tool_calls))]

    def find(self, tool_call_ids: Sequence[str]) -> list[tuple[PendingCall, list[str]]]:
        """The known calls that asked for ``tool_call_ids``, each with its ids, in first-seen
        order (ids no call of this task asked for are left out)."""
        state = self._state(create=False)
        if state is None:
            return []
        found: dict[int, tuple[PendingCall, list[str]]] = {}
        with self._lock:
            for tool_call_id in tool_call_ids:
                call = state.tool_calls.get(tool_call_id)
                if call is not None:
                    found.setdefault(id(call), (call, []))[1].append(tool_call_id)
        return list(found.values())

    def continued_agent(self, tool_call_ids: Sequence[str]) -> str | None:
        """The agent whose tool results end a new call's prompt, and forget those tool calls.

        A prompt that ends with the results of tool calls made in this task by one known agent
        is that agent's next step (AgentChat agents share final messages, never tool results).
        None when the ids are missing, unknown or belong to different or unnamed agents.
        """
        state = self._state(create=False)
        if state is None or not tool_call_ids or not all(tool_call_ids):
            return None
        with self._lock:
            calls = [state.tool_calls.get(i) for i in tool_call_ids]
            agents = {c.agent for c in calls if c is not None}
            if None in calls or len(agents) != 1:
                return None
            for tool_call_id in tool_call_ids:
                del state.tool_calls[tool_call_id]
            return agents.pop()

    def start_stream(self, messages: tuple[Mapping[str, Any], ...]) -> None:
        """Keep a stream's request messages until its end event."""
        state = self._state(create=True)
        if state is not None:
            with self._lock:
                state.stream_messages = messages

    def end_stream(self) -> tuple[Mapping[str, Any], ...]:
        """The request messages of the stream that just ended in this task (once)."""
        state = self._state(create=False)
        if state is None:
            return ()
        with self._lock:
            messages, state.stream_messages = state.stream_messages, ()
            return messages
