"""The AutoGen OpenAI client of one fulmen episode (what ``AutoGenAdapter.model_for`` returns).

Training-safe defaults: the episode's base URL and key, ``model_info`` for a model name
OpenAI does not know, no ``name`` field added to messages (it would change the prompt the
policy is trained on), no silent retries, a timeout.

The client also tells the adapter two things AutoGen's events leave out, through a per-call
scope held in a context variable (the adapter reads it when AutoGen logs the call's event, in
the same asyncio task):

* the agent it serves, when given (``agent=``): a standalone agent's call that neither asks for
  tools nor follows its own tool results has no agent in any AutoGen event;
* the gateway's request id of a *streaming* call: ``LLMStreamEndEvent`` has no response id,
  so the client's HTTP layer reads the gateway's ``X-Request-Id`` response header into the
  scope (the request runs in a task AutoGen starts, whose context is a copy of the caller's:
  it sees the same scope object).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import openai
from autogen_core.models import CreateResult, ModelFamily, ModelInfo
from autogen_ext.models.openai import OpenAIChatCompletionClient
from fulmen.adapters import MODEL_TIMEOUT_S
from fulmen.context import EpisodeContext

__all__ = [
    "DEFAULT_MODEL_INFO",
    "CallScope",
    "build_client",
    "current_call",
    "take_streamed_response_id",
]

DEFAULT_MODEL_INFO: ModelInfo = {
    "vision": False,
    "function_calling": True,
    "json_output": False,
    "family": ModelFamily.UNKNOWN,
    "structured_output": False,
}
"""What ``AutoGenAdapter.model_for`` tells AutoGen about a model it does not know (text in, text or
tool calls out)."""

_REQUEST_ID_HEADER = "X-Request-Id"


@dataclass(slots=True, kw_only=True)
class CallScope:
    """What the client knows about the call in flight in this asyncio task."""

    agent: str | None
    """The agent the client serves (``model_for(..., agent=)``), if given."""
    request_id: str | None = None
    """The gateway's request id of the stream being read, once its headers arrived."""


_scope: ContextVar[CallScope | None] = ContextVar("fulmen_autogen_call", default=None)


def current_call() -> CallScope | None:
    """The scope of the :func:`build_client` call in flight in this task, if any."""
    return _scope.get()


def take_streamed_response_id() -> str | None:
    """The response id (``chatcmpl-{request id}``) of the stream the current task is reading
    through a :func:`build_client` client, or None. Each id is handed out once."""
    scope = _scope.get()
    if scope is None or scope.request_id is None:
        return None
    request_id, scope.request_id = scope.request_id, None
    return f"chatcmpl-{request_id}"


async def _note_request_id(response: Any) -> None:
    """HTTP response hook: keep the gateway's request id for the call being made."""
    scope = _scope.get()
    if scope is not None:
        request_id = response.headers.get(_REQUEST_ID_HEADER)
        if isinstance(request_id, str) and request_id:
            scope.request_id = request_id


class _EpisodeClient(OpenAIChatCompletionClient):
    """:class:`OpenAIChatCompletionClient` that opens a :class:`CallScope` around each call."""

    _fulmen_agent: str | None = None

    async def create(
        self, *args: Any, **kwargs: Any
    ) -> CreateResult:
        """Same as the base class, inside a call scope."""
        token = _scope.set(CallScope(agent=self._fulmen_agent))
        try:
            return await super().create(*args, **kwargs)
        finally:
            _scope.reset(token)

    async def create_stream(
        self, *args: Any, **kwargs: Any
    ) -> AsyncGenerator[str | CreateResult, None]:
        """Same as the base class, inside a call scope."""
        token = _scope.set(CallScope(agent=self._fulmen_agent))
        try:
            async for item in super().create_stream(*args, **kwargs):
                yield item
        finally:
            # finalised from another context (ValueError): nothing of ours is left there
            with contextlib.suppress(ValueError):
                _scope.reset(token)


def build_client(
    ctx: EpisodeContext,
    model: str,
    *,
    agent: str | None,
    model_info: ModelInfo | None,
    include_name_in_message: bool,
    max_retries: int,
    **kwargs: Any,
) -> OpenAIChatCompletionClient:
    """The client :meth:`fulmen_autogen.AutoGenAdapter.model_for` returns (see there); the
    caller has checked ``kwargs``."""
    http_client = kwargs.pop("http_client", None)
    if http_client is None:
        http_client = openai.DefaultAsyncHttpxClient()
    hooks = dict(http_client.event_hooks)
    hooks["response"] = [*hooks.get("response", []), _note_request_id]
    http_client.event_hooks = hooks
    config: dict[str, Any] = {
        "timeout": MODEL_TIMEOUT_S,
        **kwargs,
        "base_url": ctx.base_url,
        "api_key": ctx.api_key,
        "model": model,
        "model_info": model_info if model_info is not None else DEFAULT_MODEL_INFO,
        "include_name_in_message": include_name_in_message,
        "max_retries": max_retries,
        "http_client": http_client,
    }
    client = _EpisodeClient(**config)
    client._fulmen_agent = agent
    return client
