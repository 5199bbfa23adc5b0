"""The AutoGen AgentChat adapter: AutoGen's own event loggers, joined to the gateway's calls.

What is hooked: a :class:`logging.Filter` on AutoGen's two event loggers,
``autogen_core.events`` (``EVENT_LOGGER_NAME``: LLM calls) and ``autogen_agentchat.events``
(tool call requests and results). A filter rather than a handler because the loggers must be
opened to DEBUG to see AgentChat's tool events; the filter then lets through to the user's
handlers exactly the records the user's logging configuration let through before, so attaching
changes nothing the user sees. ``detach`` removes the filter and restores the loggers' levels.

What is annotated, per LLM call (see ``README.md``):

* as soon as the call ends (``LLMCallEvent`` / ``LLMStreamEndEvent``, before any tool runs):
  the agent, when known: AutoGen's ``agent_id`` inside a team; else the agent whose own tool
  results end the prompt; else the agent the client was made for
  (``AutoGenAdapter.model_for(..., agent=)``); and ``autogen_agent_id``;
* when the agent asks for tools (``ToolCallRequestEvent``, before they run): the agent's name;
* when the tools finished (``ToolCallExecutionEvent``): their results, on the call that asked.

Calls are found by their response id (``chatcmpl-{episode}.{seq}``); streaming calls need a
client from :meth:`AutoGenAdapter.model_for` (AutoGen's stream events carry no id).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar

from autogen_agentchat import EVENT_LOGGER_NAME as AGENTCHAT_EVENT_LOGGER_NAME
from autogen_agentchat.messages import ToolCallExecutionEvent, ToolCallRequestEvent
from autogen_core import EVENT_LOGGER_NAME as CORE_EVENT_LOGGER_NAME
from autogen_core.logging import LLMCallEvent, LLMStreamEndEvent, LLMStreamStartEvent
from autogen_core.models import ModelInfo
from autogen_ext.models.openai import OpenAIChatCompletionClient
from fulmen.adapters import DEFAULT_MODEL, Adapter, CallInfo, FrameworkRequirement
from fulmen.context import EpisodeContext

from fulmen_autogen._client import build_client, current_call, take_streamed_response_id
from fulmen_autogen._events import (
    LlmEnd,
    agent_name,
    read_llm_call,
    read_stream_end,
    trailing_tool_call_ids,
)
from fulmen_autogen._requirement import REQUIREMENT
from fulmen_autogen._turns import PendingCall, Turns

__all__ = ["EVENT_LOGGERS", "AutoGenAdapter"]

EVENT_LOGGERS: tuple[str, ...] = (CORE_EVENT_LOGGER_NAME, AGENTCHAT_EVENT_LOGGER_NAME)
"""The loggers the adapter hooks (``autogen_core.events``, ``autogen_agentchat.events``)."""


class _EventFilter(logging.Filter):
    """Reads every AutoGen event record, then passes on what the user's config passed before."""

    def __init__(self, adapter: AutoGenAdapter, logger: logging.Logger, level: int) -> None:
        super().__init__()
        self._adapter = adapter
        self._logger = logger
        self._user_level = level
        """The logger's own level before attach (``NOTSET``: inherited from its parents)."""

    def filter(self, record: logging.LogRecord) -> bool:
        self._adapter.on_event(record.msg)
        if self._user_level != logging.NOTSET:
            return record.levelno >= self._user_level
        parent = self._logger.parent
        return parent is None or record.levelno >= parent.getEffectiveLevel()


class AutoGenAdapter(Adapter):
    """fulmen adapter for AutoGen AgentChat 0.7 (``autogen-agentchat``, ``autogen-core``).

    ``AutoGenAdapter().attach()`` is the one line to add (or use it as a context manager), and
    :meth:`model_for` the episode's model client. One instance may be attached at a time in a
    process (:class:`~fulmen.adapters.AdapterError` otherwise). Hooks are synchronous and
    cheap; they never raise into the agent.
    """

    framework: ClassVar[str] = "autogen"
    requirement: ClassVar[FrameworkRequirement] = REQUIREMENT

    def __init__(self) -> None:
        super().__init__()
        self._turns = Turns()
        self._installed: list[tuple[logging.Logger, _EventFilter, int]] = []

    @classmethod
    def model_for(
        cls,
        ctx: EpisodeContext,
        model: str = DEFAULT_MODEL,
        *,
        agent: str | None = None,
        model_info: ModelInfo | None = None,
        include_name_in_message: bool = False,
        max_retries: int = 0,
        **kwargs: Any,
    ) -> OpenAIChatCompletionClient:
        """An AutoGen ``OpenAIChatCompletionClient`` whose calls go to the episode ``ctx``.

        Args:
            ctx: the episode (its ``base_url`` and ``api_key`` are used).
            model: the model name the inference server serves.
            agent: name of the agent this client serves (when it serves one): the name of its
                calls that AutoGen does not attribute (a standalone agent's call that neither
                asks for tools nor follows its own tool results). Inside a team, AutoGen's own
                agent id wins.
            model_info: what the model can do; default :data:`DEFAULT_MODEL_INFO` (required by
                AutoGen for a model name OpenAI does not know).
            include_name_in_message: AutoGen's option to add a ``name`` field to messages; off,
                because it changes the prompt the policy sees.
            max_retries: retries of a failed call by the OpenAI client; 0 so that an
                infrastructure failure fails the episode (fulmen retries it whole) instead of
                being recorded twice inside it.
            **kwargs: any other ``OpenAIChatCompletionClient`` argument (``temperature``,
                ``max_tokens``, ``http_client``...); ``timeout`` defaults to
                :data:`~fulmen.adapters.MODEL_TIMEOUT_S`.

        Returns:
            The client. Its streaming calls are annotated by an attached adapter (it reads the
            gateway's ``X-Request-Id`` header for them); its serialised form
            (``dump_component``) is a plain ``OpenAIChatCompletionClient``.

        Raises:
            AdapterError: ``kwargs`` sets ``base_url`` or ``api_key`` (the episode's).
        """
        cls._refuse_episode_settings(kwargs, ("api_key", "base_url"))
        return build_client(
            ctx,
            model,
            agent=agent,
            model_info=model_info,
            include_name_in_message=include_name_in_message,
            max_retries=max_retries,
            **kwargs,
        )

    # ------------------------------------------------------------------ life cycle

    def _attach(self) -> None:
        for name in EVENT_LOGGERS:
            logger = logging.getLogger(name)
            hook = _EventFilter(self, logger, logger.level)
            self._installed.append((logger, hook, logger.level))
            logger.addFilter(hook)
            logger.setLevel(logging.DEBUG)

    def _detach(self) -> None:
        for logger, hook, level in reversed(self._installed):
            logger.removeFilter(hook)
            if logger.level == logging.DEBUG:  # else the user changed it since: keep theirs
                logger.setLevel(level)
        self._installed.clear()
        self._turns.clear()

    # ------------------------------------------------------------------ events

    def on_event(self, event: object) -> None:
        """Handle one AutoGen event object (``record.msg``); never raises."""
        if isinstance(event, LLMCallEvent):
            with self.guard("LLMCallEvent"):
                self._llm_end(read_llm_call(event.kwargs))
        elif isinstance(event, LLMStreamStartEvent):
            with self.guard("LLMStreamStartEvent"):
                self._turns.start_stream(read_llm_call(event.kwargs).messages)
        elif isinstance(event, LLMStreamEndEvent):
            with self.guard("LLMStreamEndEvent"):
                end = read_stream_end(
                    event.kwargs,
                    response_id=take_streamed_response_id(),
                    messages=self._turns.end_stream(),
                )
                self._llm_end(end)
        elif isinstance(event, ToolCallRequestEvent):
            with self.guard("ToolCallRequestEvent"):
                self._tool_request(event)
        elif isinstance(event, ToolCallExecutionEvent):
            with self.guard("ToolCallExecutionEvent"):
                self._tool_results(event)

    def _llm_end(self, end: LlmEnd) -> None:
        continued = self._turns.continued_agent(trailing_tool_call_ids(end.messages))
        if end.response_id is None:
            self.log.debug("an AutoGen LLM call without a response id was not annotated")
            return
        scope = current_call()
        if end.agent_id is not None:
            agent = agent_name(end.agent_id)
        else:
            agent = continued or (scope.agent if scope is not None else None)
        metadata: dict[str, Any] = {}
        if end.agent_id is not None:
            metadata["autogen_agent_id"] = end.agent_id
        self._turns.remember(
            PendingCall(response_id=end.response_id, agent=agent), end.tool_call_ids
        )
        self.annotate(CallInfo(response_id=end.response_id, agent=agent, metadata=metadata))

    def _tool_request(self, event: ToolCallRequestEvent) -> None:
        for call, _ in self._turns.find([c.id for c in event.content if c.id]):
            if call.agent is None:
                call.agent = event.source
                self.annotate(CallInfo(response_id=call.response_id, agent=event.source))

    def _tool_results(self, event: ToolCallExecutionEvent) -> None:
        by_id = {r.call_id: r for r in event.content if r.call_id}
        for call, ids in self._turns.find(list(by_id)):
            results: list[Mapping[str, Any]] = []
            for tool_call_id in ids:
                result = by_id[tool_call_id]
                key = "error" if result.is_error else "output"
                results.append(
                    {"tool_call_id": tool_call_id, "name": result.name, key: result.content}
                )
            self.annotate(
                CallInfo(
                    response_id=call.response_id,
                    agent=call.agent or event.source,
                    tool_results=tuple(results),
                )
            )
