"""The LLM-call path: forward to the upstream, record transitions, answer the agent.

Order of a call: episode open? (404/409) → body (413/400, the episode's sampling overrides
applied, then checked) → reserve seqs → upstream request with ``X-Request-Id: {episode}.{seq}``
→ record the call's transitions in one store transaction (all its choices or none; refused with
409 and nothing stored if the episode ended meanwhile) → answer. The record is durable before
the agent sees the response (non-streaming) or the final ``data: [DONE]`` (streaming: chunks are
relayed as they arrive, stripped of what the agent did not ask for).

The choices the agent receives are exactly the choices recorded: choices the upstream returns
beyond the ``n`` asked for (after overrides), or with a repeated or invalid index, are dropped
from both.

Contract adapters rely on: every generation response (streaming or not) carries the header
``X-Request-Id: {episode}.{first_seq}``, and its body id is the upstream's ``chatcmpl-{that}``,
so a framework that hides the body id (a stream end event) can still join by the header.

Upstream failures: connection errors, HTTP 5xx, invalid bodies and broken streams give 502,
timeouts 504; each is recorded durably as a :class:`~fulmen.protocol.FailedCall` (reason and
upstream status) and no transition is recorded for that call. Upstream 4xx reach the agent
unchanged and are recorded as failed calls too (``upstream_rejected``; infrastructure failures
when 401/403/404/408/429, the agent's own bad request otherwise, e.g. vLLM's context-length
400).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import aiohttp
import msgspec
from aiohttp import web

from fulmen.drift.tokens import TOKEN_IN_FLAG
from fulmen.gateway.bodies import check_generation, read_json
from fulmen.gateway.capture import (
    CHAT,
    COMPLETIONS,
    CallContext,
    StreamAccumulator,
    keep_choices,
    transitions_from_response,
)
from fulmen.gateway.constrained import constraint_of
from fulmen.gateway.continuity import chat_response, completion_body
from fulmen.gateway.errors import GatewayError
from fulmen.gateway.registry import EpisodeRegistry
from fulmen.gateway.token_in import Continuator
from fulmen.gateway.upstream import Wants, iter_sse_data, shape_request, strip_chunk, strip_response
from fulmen.policies import PolicyRoutes
from fulmen.protocol import FailedCall, Transition
from fulmen.store.base import EpisodeFinished, EpisodeNotFound, Store, StoreError

__all__ = ["Proxy"]

_log = logging.getLogger("fulmen.gateway")

RunBlocking = Callable[[Callable[[], Any]], Awaitable[Any]]
"""Runs a short blocking store call (inline or in a thread, as the gateway is configured)."""

_PARAMS_LEFT_OUT = frozenset({"messages", "tools", "prompt", "stream", "stream_options"})
_INFRASTRUCTURE_4XX = frozenset({401, 403, 404, 408, 429})
"""Upstream 4xx that say the inference server is misconfigured or overloaded, not that the
agent's request was bad."""


class _AgentGone(Exception):
    """The agent closed its connection while a stream was relayed."""


def _policy_version(headers: Any) -> int | None:
    value = headers.get("X-Fulmen-Policy-Version")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


class Proxy:
    """Handles generation calls and ``/v1/models`` for the gateway's routes."""

    def __init__(
        self,
        *,
        store: Store,
        registry: EpisodeRegistry,
        upstream: str,
        session: aiohttp.ClientSession,
        max_body_bytes: int,
        upstream_timeout_s: float,
        run_blocking: RunBlocking,
        routes: PolicyRoutes | None = None,
        strict_tools: bool = False,
        continuity: Continuator | None = None,
    ) -> None:
        self._store = store
        self._strict_tools = strict_tools
        self._continuity = continuity
        self._routes = routes
        self._registry = registry
        self._upstream = upstream
        self._chat_url = f"{upstream}/v1/chat/completions"
        self._completions_url = f"{upstream}/v1/completions"
        self._session = session
        self._max_body = max_body_bytes
        self._timeout = upstream_timeout_s
        self._run_blocking = run_blocking

    async def _failure(
        self, ctx: CallContext | None, exc: BaseException, upstream_status: int | None = None
    ) -> GatewayError:
        """Describe an upstream failure (504 for timeouts, else 502) and record it durably as a
        failed call of the episode (when there is one)."""
        error = self._describe(exc)
        if ctx is not None:
            await self._record_failure(
                ctx, error.code or "upstream_error", error.message, upstream_status, True
            )
        return error

    async def _record_failure(
        self,
        ctx: CallContext,
        reason: str,
        message: str,
        upstream_status: int | None,
        infrastructure: bool,
    ) -> None:
        failure = FailedCall(
            episode_id=ctx.episode_id,
            request_id=ctx.request_id,
            reason=reason,
            message=message[:2000],
            upstream_status=upstream_status,
            infrastructure=infrastructure,
        )
        try:
            await self._run_blocking(lambda: self._store.add_failed_call(failure))
        except StoreError:  # the agent still gets the upstream's error; the log says this too
            _log.exception("could not record the failed call %s", ctx.request_id)

    async def _agent_left(self, request: web.Request, ctx: CallContext) -> bool:
        """True when the agent closed its connection before its answer was sent (its client
        timed out, or it died): the answer is dropped and a failed call ``agent_gone`` is put
        on record instead (not an infrastructure failure). So the calls on record are answers
        an agent received, and an agent's retry of the call is a new call, recorded once."""
        transport = request.transport
        if transport is not None and not transport.is_closing():
            return False
        await self._record_failure(
            ctx,
            "agent_gone",
            "the agent closed its connection before the answer was sent: the answer was "
            "dropped, not recorded (a retry of this call is a new call)",
            None,
            False,
        )
        return True

    def _describe(self, exc: BaseException) -> GatewayError:
        if isinstance(exc, GatewayError):
            return exc
        if isinstance(exc, asyncio.TimeoutError):
            return GatewayError(
                f"the upstream {self._upstream} did not answer within {self._timeout:g} s "
                "(Gateway(upstream_timeout_s=...) sets the limit)",
                status=504,
                code="upstream_timeout",
            )
        if isinstance(exc, aiohttp.ClientConnectorError):
            message = f"cannot connect to the upstream {self._upstream} ({exc}): is the inference server running?"
        else:
            message = f"the connection to the upstream {self._upstream} failed: {type(exc).__name__}: {exc}"
        return GatewayError(message, status=502, code="upstream_unavailable")

    async def models(self, request: web.Request) -> web.Response:
        """Proxy ``GET /v1/models`` (no episode needed)."""
        try:
            async with self._session.get(f"{self._upstream}/v1/models") as upstream:
                raw = await upstream.read()
                kind = upstream.headers.get("Content-Type", "application/json")
                if upstream.status >= 500:
                    raise self._upstream_status(upstream.status, raw)
                return web.Response(
                    status=upstream.status, body=raw, headers={"Content-Type": kind}
                )
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise self._describe(exc) from exc

    def _upstream_status(self, status: int, raw: bytes) -> GatewayError:
        detail = raw[:500].decode(errors="replace")
        return GatewayError(
            f"the upstream {self._upstream} answered HTTP {status}: {detail}",
            status=502,
            code="upstream_error",
        )

    async def generate(
        self, request: web.Request, episode_id: str, chat: bool
    ) -> web.StreamResponse:
        """Handle one chat or completions call of ``episode_id``."""
        started = time.time()
        self._registry.ensure_open(episode_id)
        body = await read_json(request, self._max_body)
        overrides: dict[str, Any] | None = self._registry.sampling(episode_id)
        if overrides:
            body = {**body, **overrides}  # the trainer decides how rollouts sample
        n, prompts = check_generation(body, chat)  # n: what the upstream is asked for
        first = self._registry.reserve(episode_id, n * (1 if chat else len(prompts)))
        if overrides and type(overrides.get("seed")) is int:
            body["seed"] = overrides["seed"] + first
        agent, parent, tags = _fulmen_headers(request)
        if agent is None and isinstance(body.get("user"), str):
            agent = body["user"]
        params = {k: v for k, v in body.items() if k not in _PARAMS_LEFT_OUT}
        policy: str | None = None
        if self._routes is not None:  # per-agent policies: the call goes to its agent's adapter
            agent, policy, served = self._routes.route(agent, body.get("model"))
            body = dict(body)
            body["model"] = served
        ctx = CallContext(
            episode_id=episode_id,
            first_seq=first,
            request_id=f"{episode_id}.{first}",
            endpoint=CHAT if chat else COMPLETIONS,
            agent=agent,
            parent_id=parent,
            tags=tags,
            messages=tuple(body["messages"]) if chat else (),
            prompts=tuple(prompts),
            tools=tuple(body.get("tools") or ()),
            params=params,
            n=n,
            started_at=started,
            stream=bool(body.get("stream")),
            routed=self._routes is not None,
            policy=policy,
            constraint=constraint_of(body, strict_tools=self._strict_tools),
        )
        shaped, wants = shape_request(body, chat)
        headers = {"Content-Type": "application/json", "X-Request-Id": ctx.request_id}
        t0 = time.perf_counter()
        url = self._chat_url if chat else self._completions_url
        plan = None
        if self._continuity is not None and chat:  # exact continuity: token-in when it extends
            plan = await self._continuity.plan(ctx, shaped)
            if plan is not None:
                url, shaped = self._completions_url, completion_body(shaped, plan.prompt)
        try:
            upstream = await self._session.post(url, data=json.dumps(shaped).encode(), headers=headers)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise await self._failure(ctx, exc) from exc
        try:
            if upstream.status != 200:
                return await self._pass_error(upstream, ctx)
            self._registry.ensure_open(episode_id)  # finished while at the upstream: 409
            version = _policy_version(upstream.headers)
            if ctx.stream:
                return await self._relay(request, upstream, ctx, wants, version, t0)
            try:
                raw = await upstream.read()
                response = msgspec.json.decode(raw)
                if not isinstance(response, dict) or not isinstance(response.get("choices"), list):
                    raise ValueError("no 'choices' list")
                if plan is not None and self._continuity is not None:
                    response = chat_response(
                        response, ctx.request_id, self._continuity.tool_parser, bool(ctx.tools)
                    )
            except (ValueError, msgspec.DecodeError) as exc:
                raise await self._failure(
                    ctx,
                    GatewayError(
                        f"the upstream {self._upstream} sent an invalid response ({exc})",
                        status=502,
                        code="upstream_invalid_response",
                    ),
                ) from exc
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise await self._failure(ctx, exc) from exc
        finally:
            upstream.release()
        latency = time.perf_counter() - t0
        trimmed = keep_choices(response, ctx.choice_limit)
        if await self._agent_left(request, ctx):
            return web.Response(status=499)  # nobody reads it: the connection is gone
        transitions = transitions_from_response(
            ctx, response, policy_version=version, upstream_latency_s=latency, ended_at=time.time()
        )
        if plan is not None:
            continues = {"continues": plan.anchor.request_id}
            transitions = [  # served as ids: a template re-render differs by design (drift)
                replace(t, flags=(*t.flags, TOKEN_IN_FLAG), metadata={**t.metadata, **continues})
                for t in transitions
            ]
        await self._record(transitions)
        if self._continuity is not None and chat:
            self._continuity.remember(ctx, transitions)
        if not wants.everything:
            strip_response(response, wants)
        if trimmed or plan is not None or not wants.everything:
            raw = json.dumps(response).encode()
        return web.Response(
            body=raw, headers={"Content-Type": "application/json", "X-Request-Id": ctx.request_id}
        )

    async def _pass_error(self, upstream: aiohttp.ClientResponse, ctx: CallContext) -> web.Response:
        """Upstream 4xx: hand it to the agent unchanged. 5xx or other: 502. Either way the call
        is recorded as failed."""
        status = upstream.status
        try:
            raw = await upstream.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise await self._failure(ctx, exc, status) from exc
        if 400 <= status < 500:
            detail = raw[:500].decode(errors="replace")
            await self._record_failure(
                ctx,
                "upstream_rejected",
                f"the upstream {self._upstream} answered HTTP {status}: {detail}",
                status,
                status in _INFRASTRUCTURE_4XX,
            )
            kind = upstream.headers.get("Content-Type", "application/json")
            return web.Response(status=status, body=raw, headers={"Content-Type": kind})
        raise await self._failure(ctx, self._upstream_status(status, raw), status)

    async def _record(self, transitions: list[Transition]) -> None:
        """Record one call's transitions atomically; 409 (nothing stored) when its episode has
        finished meanwhile."""
        try:
            await self._run_blocking(lambda: self._store.add_transitions(transitions))
        except (EpisodeFinished, EpisodeNotFound) as exc:
            if transitions:
                self._registry.mark_finished(transitions[0].episode_id)
            raise GatewayError(
                f"{exc}: this call was not recorded (the episode ended while it was running)",
                status=409,
                code="episode_finished",
            ) from exc
        except StoreError as exc:
            raise GatewayError(
                f"the gateway could not record this call in its store: {exc}",
                status=500,
                code="store_error",
            ) from exc

    async def _relay(
        self,
        request: web.Request,
        upstream: aiohttp.ClientResponse,
        ctx: CallContext,
        wants: Wants,
        version: int | None,
        t0: float,
    ) -> web.StreamResponse:
        """Relay a stream chunk by chunk; record it before sending ``[DONE]``."""
        if await self._agent_left(request, ctx):
            return web.StreamResponse(status=499)
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "X-Request-Id": ctx.request_id,
            }
        )
        await response.prepare(request)
        accumulator = StreamAccumulator(ctx.endpoint)
        try:
            done = False
            async for data in iter_sse_data(upstream.content):
                if data.strip() == b"[DONE]":
                    done = True
                    await upstream.read()  # the end of the body: keeps the connection reusable
                    break
                chunk = msgspec.json.decode(data)
                if not isinstance(chunk, dict):
                    raise ValueError(f"a stream event is not a JSON object: {data[:200]!r}")
                if keep_choices(chunk, ctx.choice_limit) and not chunk["choices"]:
                    continue  # only choices the call did not ask for: never relayed or recorded
                if chunk.get("error") and not chunk.get("choices"):
                    raise GatewayError(
                        f"the upstream {self._upstream} failed mid-stream: {data[:500].decode(errors='replace')}",
                        status=502,
                        code="upstream_error",
                    )
                accumulator.feed(chunk)
                if not wants.everything:
                    strip_chunk(chunk, wants)
                    data = json.dumps(chunk).encode()
                await _write(response, b"data: " + data + b"\n\n")
            if not done:
                raise GatewayError(
                    f"the upstream {self._upstream} closed the stream before 'data: [DONE]'",
                    status=502,
                    code="upstream_incomplete",
                )
            if await self._agent_left(request, ctx):
                raise _AgentGone
            transitions = transitions_from_response(
                ctx,
                accumulator.response(),
                policy_version=version,
                upstream_latency_s=time.perf_counter() - t0,
                ended_at=time.time(),
            )
            await self._record(transitions)
            if self._continuity is not None and ctx.endpoint == CHAT:
                self._continuity.remember(ctx, transitions)
            await _write(response, b"data: [DONE]\n\n")
            await response.write_eof()
        except _AgentGone:
            _log.info("agent closed the stream of %s before it ended", ctx.request_id)
        except (
            TimeoutError,
            aiohttp.ClientError,
            ValueError,
            msgspec.DecodeError,
            GatewayError,
        ) as exc:
            ours = isinstance(exc, GatewayError) and exc.code in ("store_error", "episode_finished")
            error = exc if isinstance(exc, GatewayError) and ours else await self._failure(ctx, exc)
            body = json.dumps(error.body()).encode()
            try:
                await _write(response, b"data: " + body + b"\n\n")
                await response.write_eof()
            except _AgentGone:
                pass
        return response


async def _write(response: web.StreamResponse, data: bytes) -> None:
    try:
        await response.write(data)
    except (ConnectionResetError, aiohttp.ClientConnectionResetError) as exc:
        raise _AgentGone from exc


def _fulmen_headers(request: web.Request) -> tuple[str | None, str | None, dict[str, str]]:
    """``(agent, parent_id, tags)`` from the ``X-Fulmen-*`` request headers."""
    agent = parent = None
    tags: dict[str, str] = {}
    for name, value in request.headers.items():
        lower = name.lower()
        if not lower.startswith("x-fulmen-"):
            continue
        key = lower[len("x-fulmen-") :]
        if key == "agent":
            agent = value
        elif key == "parent":
            parent = value
        else:
            tags[key.replace("-", "_")] = value
    return agent, parent, tags
