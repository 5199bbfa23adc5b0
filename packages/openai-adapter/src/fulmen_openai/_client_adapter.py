"""The adapter for plain openai client code: calls annotated from the HTTP layer."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, Literal, overload

from fulmen.adapters import DEFAULT_MODEL, Adapter, CallInfo, FrameworkRequirement
from fulmen.context import EpisodeContext
from openai import AsyncOpenAI, OpenAI

from fulmen_openai._clients import EPISODE_HEADER, EPISODE_OWNED, client_options, scope_to_episode
from fulmen_openai._requirement import REQUIREMENT
from fulmen_openai._scope import current_agent_scope, episode_in_context
from fulmen_openai._transport import Exchange, install, uninstall

__all__ = ["OpenAIClientAdapter"]

_GENERATION_PATHS = ("/chat/completions", "/completions")
_MAX_PENDING_TOOL_CALLS = 65536
"""Tool calls remembered until their result shows up in a later request (oldest dropped)."""


class OpenAIClientAdapter(Adapter):
    """Annotates every chat/completions call an openai client makes (``httpx2`` by default, or an
    explicit ``httpx`` client), with no change to the agent's code.

    * The call's episode and request id come from the gateway's answer (``X-Request-Id``), so a
      call is only ever annotated on the episode the gateway recorded it under.
    * Agent name: the innermost :func:`fulmen_openai.agent_scope`, else the request's ``user``
      field; node: the scope's node (None unless given).
    * Tool results: when a later request carries ``role: "tool"`` messages answering a tool call
      this adapter saw in a response, they are added to the call that asked for them.
    * One global client pointed at the gateway's plain ``/v1`` routes: the adapter adds
      ``X-Episode-Id`` from the episode the runner set in the caller's context (threads started
      with ``copy_context`` and ``async`` tasks inherit it), and replaces the client's key with
      that episode's own token when it has one (the client may hold the gateway's admin token:
      it never goes out on an episode's call). A call with no episode is never
      attributed by a guess: the gateway refuses it (400 ``no_episode``) and
      :attr:`unattributed` counts it.

    :meth:`model_for` gives an episode its own client. Calls made inside an OpenAI Agents SDK
    model call while an :class:`~fulmen_openai.AgentsSDKAdapter` is attached belong to that
    adapter and are left alone here. Thread-safe.
    """

    framework: ClassVar[str] = "openai"
    requirement: ClassVar[FrameworkRequirement] = REQUIREMENT

    @overload
    @classmethod
    def model_for(
        cls,
        ctx: EpisodeContext,
        model: str = DEFAULT_MODEL,
        *,
        use_async: Literal[False] = False,
        **client_kwargs: Any,
    ) -> OpenAI: ...

    @overload
    @classmethod
    def model_for(
        cls,
        ctx: EpisodeContext,
        model: str = DEFAULT_MODEL,
        *,
        use_async: Literal[True],
        **client_kwargs: Any,
    ) -> AsyncOpenAI: ...

    @classmethod
    def model_for(
        cls,
        ctx: EpisodeContext,
        model: str = DEFAULT_MODEL,
        *,
        use_async: bool = False,
        **client_kwargs: Any,
    ) -> OpenAI | AsyncOpenAI:
        """An ``OpenAI`` client (``AsyncOpenAI`` with ``use_async=True``) whose calls go to the
        episode ``ctx`` (``base_url=ctx.base_url``).

        Each episode gets its own client, so calls are attributed by URL: this works from any
        thread or process, unlike the ``X-Episode-Id`` fallback of a shared global client.

        Args:
            ctx: the episode (given to the agent by fulmen's runner).
            model: not bound to the client: an openai client takes the model name on each call
                (``client.chat.completions.create(model=...)``). Accepted so that every
                adapter's ``model_for`` has one signature.
            use_async: return an ``AsyncOpenAI``.
            **client_kwargs: ``OpenAI(...)`` arguments (``http_client``...); ``max_retries``
                defaults to 0 (a retried call would be recorded twice; fulmen retries the whole
                episode) and ``timeout`` to :data:`~fulmen.adapters.MODEL_TIMEOUT_S`.

        Raises:
            AdapterError: ``client_kwargs`` sets ``base_url`` or ``api_key`` (the episode's).
        """
        cls._refuse_episode_settings(client_kwargs, EPISODE_OWNED)
        options = client_options(ctx, client_kwargs)
        return AsyncOpenAI(**options) if use_async else OpenAI(**options)

    def __init__(self) -> None:
        super().__init__()
        self.unattributed = 0
        """Calls the gateway refused because they named no episode (see the class docstring)."""
        self._lock = threading.Lock()
        self._tool_calls: OrderedDict[str, tuple[str, str, str | None]] = OrderedDict()
        self._listener = _ClientListener(self)

    def _attach(self) -> None:
        install(self._listener, priority=10)

    def _detach(self) -> None:
        uninstall(self._listener)

    # ------------------------------------------------------------------ request side

    def _on_request(self, exchange: Exchange) -> None:
        if exchange.owner is not None or not _is_generation(exchange):
            return
        exchange.owner = self.framework
        episode = _episode_in_url(exchange.path) or exchange.header(EPISODE_HEADER)
        if episode is None:
            ctx = episode_in_context()
            if ctx is not None:  # a shared client: this episode, with its own token only
                scope_to_episode(exchange, ctx)
                episode = ctx.episode_id
        exchange.notes["episode"] = episode
        body = exchange.request_json()
        scope = current_agent_scope()
        agent, node = (scope.agent, scope.node) if scope is not None else (None, None)
        if agent is None and isinstance(body, Mapping):
            user = body.get("user")
            agent = user if isinstance(user, str) and user else None
        exchange.notes["agent"], exchange.notes["node"] = agent, node
        if isinstance(body, Mapping):
            self._report_tool_results(body.get("messages"))

    def _report_tool_results(self, messages: object) -> None:
        """Add the results in ``messages`` of tool calls seen earlier to the calls that asked."""
        if not isinstance(messages, list):
            return
        found: dict[str, list[dict[str, Any]]] = {}
        agents: dict[str, str | None] = {}
        with self._lock:
            for message in messages:
                if not isinstance(message, Mapping) or message.get("role") != "tool":
                    continue
                call_id = message.get("tool_call_id")
                known = self._tool_calls.pop(call_id, None) if isinstance(call_id, str) else None
                if known is None:
                    continue
                response_id, name, agent = known
                result = {"tool_call_id": call_id, "name": name, "output": message.get("content")}
                found.setdefault(response_id, []).append(result)
                agents[response_id] = agent
        for response_id, results in found.items():
            self.annotate(
                CallInfo(
                    response_id=response_id, agent=agents[response_id], tool_results=tuple(results)
                )
            )

    # ------------------------------------------------------------------ response side

    def _on_response(self, exchange: Exchange) -> None:
        if exchange.owner != self.framework:
            return
        status = exchange.status or 0
        if exchange.notes.get("episode") is None and status == 400:
            exchange.watch_body(self._count_unattributed)
            return
        request_id = exchange.response_headers.get("x-request-id")
        if not 200 <= status < 300 or not request_id:
            return
        agent: str | None = exchange.notes.get("agent")
        call = CallInfo(response_id=str(request_id), agent=agent, node=exchange.notes.get("node"))
        if self.annotate(call):
            exchange.watch_body(lambda body: self._remember_tool_calls(call, body, exchange))

    def _remember_tool_calls(self, call: CallInfo, body: bytes, exchange: Exchange) -> None:
        with self.guard("reading a response's tool calls"):
            content_type = str(exchange.response_headers.get("content-type", ""))
            calls = list(_tool_calls_in(body, stream="event-stream" in content_type))
            with self._lock:
                for call_id, name in calls:
                    self._tool_calls[call_id] = (call.response_id, name, call.agent)
                while len(self._tool_calls) > _MAX_PENDING_TOOL_CALLS:
                    self._tool_calls.popitem(last=False)

    def _count_unattributed(self, body: bytes) -> None:
        with self.guard("reading a refused call"):
            if b"no_episode" not in body:
                return
            with self._lock:
                self.unattributed += 1
            self.log.warning(
                "an LLM call reached the gateway with no episode and was refused: it ran outside "
                "the runner's context (e.g. a ThreadPoolExecutor thread or a subprocess). Give "
                "that code its own client (OpenAIClientAdapter.model_for(ctx)), or start the "
                "thread with contextvars.copy_context().run"
            )


class _ClientListener:
    """The adapter's transport listener (keeps the hooks off the adapter's public surface)."""

    def __init__(self, adapter: OpenAIClientAdapter) -> None:
        self._adapter = adapter

    def on_request(self, exchange: Exchange) -> None:
        with self._adapter.guard("an outgoing request"):
            self._adapter._on_request(exchange)

    def on_response(self, exchange: Exchange) -> None:
        with self._adapter.guard("a response"):
            self._adapter._on_response(exchange)


def _is_generation(exchange: Exchange) -> bool:
    return exchange.method == "POST" and exchange.path.endswith(_GENERATION_PATHS)


def _episode_in_url(path: str) -> str | None:
    """``ep`` of a ``.../rollout/{ep}/v1/...`` path, else None."""
    _, sep, rest = path.partition("/rollout/")
    episode = rest.split("/", 1)[0] if sep else ""
    return episode or None


def _tool_calls_in(body: bytes, *, stream: bool) -> Iterator[tuple[str, str]]:
    """``(tool_call_id, name)`` of the tool calls in a chat completion body or SSE stream."""
    if not stream:
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return
        for choice in _choices(payload):
            message = choice.get("message")
            if isinstance(message, Mapping):
                yield from _named_calls(message.get("tool_calls"))
        return
    names: dict[tuple[int, int], tuple[str | None, str | None]] = {}
    for line in body.decode(errors="replace").splitlines():
        data = line[5:].strip() if line.startswith("data:") else ""
        if not data or data == "[DONE]":
            continue
        try:
            chunk = json.loads(data)
        except ValueError:
            continue
        for position, choice in enumerate(_choices(chunk)):
            delta = choice.get("delta")
            deltas = delta.get("tool_calls") if isinstance(delta, Mapping) else None
            for item in deltas if isinstance(deltas, list) else []:
                if not isinstance(item, Mapping):
                    continue
                index = item.get("index", 0)
                key = (
                    int(choice.get("index", position)),
                    int(index if isinstance(index, int) else 0),
                )
                call_id, name = names.get(key, (None, None))
                function = item.get("function")
                new_name = function.get("name") if isinstance(function, Mapping) else None
                names[key] = (
                    item.get("id") if isinstance(item.get("id"), str) else call_id,
                    new_name if isinstance(new_name, str) else name,
                )
    for call_id, name in names.values():
        if call_id and name:
            yield call_id, name


def _choices(payload: object) -> list[Mapping[str, Any]]:
    choices = payload.get("choices") if isinstance(payload, Mapping) else None
    return [c for c in choices if isinstance(c, Mapping)] if isinstance(choices, list) else []


def _named_calls(tool_calls: object) -> Iterator[tuple[str, str]]:
    for item in tool_calls if isinstance(tool_calls, list) else []:
        if not isinstance(item, Mapping):
            continue
        function = item.get("function")
        name = function.get("name") if isinstance(function, Mapping) else None
        call_id = item.get("id")
        if isinstance(call_id, str) and isinstance(name, str):
            yield call_id, name
