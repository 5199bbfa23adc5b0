"""Server-sent events: the bridge from engine events to the event loop, and SSE writers.

:class:`Submissions` submits an HTTP request's prompts to the engine and yields their events on
the event loop. :func:`stream_chat` / :func:`stream_completion` write vLLM's chunk sequence:
headers (with the policy version) once the first token is known, a role chunk per choice with
the prompt ids, one chunk per token with its ``token_ids``, ``stop_reason`` on the finishing
chunk, an optional usage chunk, then ``data: [DONE]``. A generation error mid-stream is sent as
``data: {"error": ...}``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from fulmen_local.server.engine import ContextLengthError, EngineStoppedError, GenerationEngine
from fulmen_local.server.errors import ApiError, bad_request
from fulmen_local.server.executor import GenerationHandle
from fulmen_local.server.outputs import TokenEvent
from fulmen_local.server.params import ParsedRequest
from fulmen_local.server.responses import POLICY_VERSION_HEADER, ResponseBuilder, dumps
from fulmen_local.server.sampling import SamplingParams
from fulmen_local.server.tool_parsers import ChoiceToolCalls, ToolCallDecoding

__all__ = ["Submissions", "stream_chat", "stream_completion"]


class Submissions:
    """The engine requests of one HTTP request, consumed as ``(key, event)`` on the loop."""

    def __init__(self, engine: GenerationEngine) -> None:
        self._engine = engine
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[tuple[int, TokenEvent]] = asyncio.Queue()
        self._handles: list[GenerationHandle] = []
        self._open = 0

    def submit(self, key: int, prompt: list[int], params: SamplingParams, request_id: str) -> None:
        def sink(event: TokenEvent) -> None:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, (key, event))

        if not prompt:
            raise bad_request("the prompt is empty: nothing to generate from", "prompt")
        if params.n > self._engine.max_batch_size:
            raise bad_request(
                f"n={params.n} is more than this server's max_batch_size "
                f"({self._engine.max_batch_size})",
                "n",
            )
        try:
            handle = self._engine.submit(prompt, params, sink, request_id=request_id)
        except ContextLengthError as exc:
            raise bad_request(str(exc), "max_tokens") from exc
        except EngineStoppedError as exc:
            raise ApiError(503, str(exc)) from exc
        except ValueError as exc:
            raise bad_request(str(exc)) from exc
        self._handles.append(handle)
        self._open += params.n

    async def events(self) -> AsyncIterator[tuple[int, TokenEvent]]:
        while self._open:
            key, event = await self._queue.get()
            if event.finish_reason is not None:
                self._open -= 1
            yield key, event

    def cancel(self) -> None:
        for handle in self._handles:
            handle.cancel()


async def _open_stream(request: web.Request, version: int) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            POLICY_VERSION_HEADER: str(version),
        }
    )
    if "X-Request-Id" in request.headers:
        response.headers["X-Request-Id"] = request.headers["X-Request-Id"]
    await response.prepare(request)
    return response


async def _send(response: web.StreamResponse, body: Any) -> None:
    payload = body if isinstance(body, str) else dumps(body)
    await response.write(f"data: {payload}\n\n".encode())


async def _first_event(
    subs: Submissions,
) -> tuple[AsyncIterator[tuple[int, TokenEvent]], tuple[int, TokenEvent]]:
    events = subs.events()
    first = await anext(events)
    event = first[1]
    if event.token_id is None and event.finish_reason == "error":
        raise ApiError(500, f"generation failed: {event.error}")
    return events, first


async def stream_chat(
    request: web.Request,
    req: ParsedRequest,
    subs: Submissions,
    prompt: tuple[int, ...],
    make_builder: Callable[[int], ResponseBuilder],
    tools: ToolCallDecoding | None = None,
) -> web.StreamResponse:
    """Stream a chat completion; with ``tools`` (the request asks for tool calls) content is
    held back from a call's start and the calls come in the finishing chunk."""
    events, first = await _first_event(subs)
    build = make_builder(first[1].policy_version)
    response = await _open_stream(request, build.policy_version)
    for i in range(req.n):
        await _send(response, build.role_chunk(i, prompt if req.return_token_ids else None))
    choices = [tools.stream(req.stop) if tools is not None else None for _ in range(req.n)]
    completion_tokens, running = 0, req.n

    async def all_events() -> AsyncIterator[tuple[int, TokenEvent]]:
        yield first
        async for item in events:
            yield item

    async for _, ev in all_events():
        if ev.finish_reason == "error":
            await _send(response, ApiError(500, f"generation failed: {ev.error}").body())
            break
        completion_tokens += ev.token_id is not None
        running -= ev.finish_reason is not None
        delta, finish = _chat_delta(ev, choices[ev.index])
        if not delta and finish is None and not (req.return_token_ids or req.logprobs):
            continue
        choice: dict[str, Any] = {
            "index": ev.index,
            "delta": delta,
            "logprobs": None,
            "finish_reason": finish,
        }
        if req.logprobs and ev.token_id is not None:
            entry = build.chat_logprob_entry(ev.token_id, ev.logprob or 0.0, ev.top_logprobs)
            choice["logprobs"] = {"content": [entry]}
        if finish is not None:
            choice["stop_reason"] = ev.stop_reason
        if req.return_token_ids:
            choice["token_ids"] = [ev.token_id] if ev.token_id is not None else []
        last = running == 0 and not req.include_usage
        await _send(
            response,
            build.chunk([choice], **({"system_fingerprint": build.fingerprint} if last else {})),
        )
    if req.include_usage:
        await _send(response, build.usage_chunk(len(prompt), completion_tokens))
    await _send(response, "[DONE]")
    await response.write_eof()
    return response


def _chat_delta(ev: TokenEvent, tools: ChoiceToolCalls | None) -> tuple[dict[str, Any], str | None]:
    """The delta and finish reason of one event's chunk (tool calls resolved at the end)."""
    content, parsed = tools.feed(ev) if tools is not None else (ev.text, None)
    finish = ev.finish_reason
    delta: dict[str, Any] = {}
    calls: list[dict[str, Any]] = []
    if parsed is not None:
        calls = [{"index": k, **call} for k, call in enumerate(parsed.tool_calls)]
        finish = "tool_calls"
    if calls:  # vLLM's tool-call deltas carry an explicit null content
        delta["content"] = content or None
        delta["tool_calls"] = calls
    elif content:
        delta["content"] = content
    return delta, finish


async def stream_completion(
    request: web.Request,
    req: ParsedRequest,
    subs: Submissions,
    prompts: list[list[int]],
    make_builder: Callable[[int], ResponseBuilder],
) -> web.StreamResponse:
    events, first = await _first_event(subs)
    build = make_builder(first[1].policy_version)
    response = await _open_stream(request, build.policy_version)
    started: set[int] = set()
    offsets: dict[int, int] = {}
    completion_tokens = 0

    async def all_events() -> AsyncIterator[tuple[int, TokenEvent]]:
        yield first
        async for item in events:
            yield item

    async for key, ev in all_events():
        if ev.finish_reason == "error":
            await _send(response, ApiError(500, f"generation failed: {ev.error}").body())
            break
        index = key * req.n + ev.index
        choice: dict[str, Any] = {
            "index": index,
            "text": ev.text,
            "logprobs": None,
            "finish_reason": ev.finish_reason,
        }
        if ev.finish_reason is not None:
            choice["stop_reason"] = ev.stop_reason
        if req.logprobs and ev.token_id is not None:
            token = build.text(ev.token_id)
            top = {token: ev.logprob or 0.0}
            for i, lp in ev.top_logprobs:
                top.setdefault(build.text(i), lp)
            choice["logprobs"] = {
                "text_offset": [offsets.get(index, 0)],
                "token_logprobs": [ev.logprob],
                "tokens": [token],
                "top_logprobs": [top],
            }
            offsets[index] = offsets.get(index, 0) + len(token)
        if req.return_token_ids:
            choice["token_ids"] = [ev.token_id] if ev.token_id is not None else []
            if index not in started:
                choice["prompt_token_ids"] = list(prompts[key])
        started.add(index)
        completion_tokens += ev.token_id is not None
        await _send(response, build.completion_chunk(choice))
    if req.include_usage:
        usage = build.usage(sum(len(p) for p in prompts), completion_tokens, details=False)
        await _send(response, {**build.completion_chunk({}), "choices": [], "usage": usage})
    await _send(response, "[DONE]")
    await response.write_eof()
    return response
