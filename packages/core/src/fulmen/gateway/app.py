"""The capture gateway: an OpenAI-compatible proxy that records every LLM call of an episode.

Routes (every one answers errors as OpenAI-style JSON bodies):

* ``POST /rollout/{episode}/v1/chat/completions`` and ``/rollout/{episode}/v1/completions``:
  the per-episode base URL to give the agent's OpenAI client.
* ``POST /v1/chat/completions`` and ``/v1/completions`` with header ``X-Episode-Id``: for agents
  that share one global client (a 400 explains both ways when neither is given).
* ``GET /v1/models`` and ``/rollout/{episode}/v1/models``: proxied to the upstream.
* the control routes of :mod:`fulmen.gateway.control` (episodes, rewards, finish, status).

HTTP stack: aiohttp for both the server and the upstream client: one event loop, a keep-alive
connection pool to the upstream, streaming in both directions, and a small per-request cost
(see ``benchmarks/README.md``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import aiohttp
from aiohttp import web

from fulmen.gateway.authority import allows
from fulmen.gateway.continuity import ContinuityStats
from fulmen.gateway.control import ControlRoutes
from fulmen.gateway.errors import GatewayError, error_body
from fulmen.gateway.http_guard import JsonErrorServer, check_headers, expect_handler
from fulmen.gateway.loop_thread import LoopThread
from fulmen.gateway.proxy import Proxy
from fulmen.gateway.registry import EpisodeRegistry, check_episode_id
from fulmen.gateway.store_lock import StoreLock
from fulmen.gateway.token_in import Continuator
from fulmen.gateway.upstream import upstream_base
from fulmen.policies import PolicyRoutes
from fulmen.protocol import Annotation, Episode, EpisodeStatus, Reward, Task, TerminationReason
from fulmen.store.base import EpisodeNotFound, Store
from fulmen.toolcalls import get_tool_parser

__all__ = ["Gateway"]

_log = logging.getLogger("fulmen.gateway")

_UNSUPPORTED = (
    "the gateway serves /v1/chat/completions, /v1/completions and /v1/models; {path} is not "
    "supported (/v1/responses returns no token ids: configure the agent to use chat completions)"
)


class _NoLock:
    """A store that is not a file is not locked."""

    def acquire(self) -> None: ...

    def release(self) -> None: ...


class Gateway:
    """OpenAI-compatible capture proxy in front of an inference server; also the in-process
    :class:`~fulmen.episode_control.EpisodeControl`.

    Args:
        store: Where episodes, transitions and rewards are recorded. One gateway serves a
            store at a time: :meth:`start` refuses (409 ``store_in_use``) while another
            gateway, in any process, serves the same file.
        upstream_url: The inference server (``http://host:port``, with or without ``/v1``).
        host: Interface to bind; loopback unless told otherwise.
        port: Port to bind (0: a free ephemeral port; :attr:`url` tells which).
        auth_token: When set, every route but ``/healthz`` requires a bearer token (an OpenAI
            client's ``api_key``): this admin token, or an episode's own token
            (:func:`~fulmen.gateway.authority.episode_token`), which opens only that episode's
            LLM calls, rewards, annotations and state (see :mod:`fulmen.gateway.authority`).
        max_body_bytes: Larger request bodies get 413.
        upstream_timeout_s: Longest the upstream may stay silent (before its response, or
            between stream chunks) before the call fails with 504.
        connect_timeout_s: Limit for opening a connection to the upstream.
        store_writes: ``"inline"`` (default) runs each store write on the event loop: a commit
            takes about 0.25 ms, less than handing it to a thread costs (measured in
            ``benchmarks/gateway_overhead.py``). ``"thread"`` runs writes in worker threads, so
            the loop keeps serving through slow commits (a store on a slow or busy disk).
        upstream_headers: Extra headers sent with every upstream request, e.g.
            ``{"Authorization": "Bearer ..."}`` for a vLLM started with ``--api-key``. (The
            agent's own headers are never forwarded.)
        routes: Per-agent policies (:mod:`fulmen.policies`): each call goes upstream with
            ``model`` set to its agent's policy (or the frozen base), and the recorded
            transition names the policy in ``metadata["policy"]``. None: calls go as sent.
        strict_tools: The upstream constrains every tool call, ``strict`` or not (vLLM's
            ``--tool-strict-level function`` or ``parameter``): tokens from a call's first
            ``<tool_call>`` on are recorded as constrained (:mod:`fulmen.gateway.constrained`)
            even when its tools are not ``strict``.
        continuity: Exact-continuity mode (:mod:`fulmen.gateway.continuity`): a chat call that
            extends the previous call of its episode and agent is served token-in through
            the upstream's ``/v1/completions`` (prompt = the earlier prompt + response ids +
            the new messages rendered by the upstream's ``/tokenize``), so consecutive calls
            merge into one exact training row. :attr:`continuity_stats` counts what it did.
        tool_parser: With ``continuity``: the upstream's tool-call parser (vLLM's
            ``--tool-call-parser``; one of :data:`fulmen.toolcalls.TOOL_PARSER_NAMES`), which
            turns a token-in completion back into a chat answer with ``tool_calls``.

    Use ``async with Gateway(...)`` (or :meth:`start`/:meth:`stop`) inside a running loop, or
    ``with Gateway(...)`` (:meth:`start_in_thread`/:meth:`stop_thread`) from sync code.
    The control methods (:meth:`start_episode`...) are thread-safe and blocking.
    """

    def __init__(
        self,
        store: Store,
        upstream_url: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        auth_token: str | None = None,
        max_body_bytes: int = 8 * 1024 * 1024,
        upstream_timeout_s: float = 300.0,
        connect_timeout_s: float = 10.0,
        store_writes: Literal["inline", "thread"] = "inline",
        upstream_headers: Mapping[str, str] | None = None,
        routes: PolicyRoutes | None = None,
        strict_tools: bool = False,
        continuity: bool = False,
        tool_parser: str = "hermes",
    ) -> None:
        if store_writes not in ("inline", "thread"):
            raise ValueError(f"store_writes: expected 'inline' or 'thread', got {store_writes!r}")
        for name, value in (
            ("upstream_timeout_s", upstream_timeout_s),
            ("connect_timeout_s", connect_timeout_s),
            ("max_body_bytes", max_body_bytes),
        ):
            if isinstance(value, bool) or not value > 0:
                raise ValueError(f"{name}: expected a positive number, got {value!r}")
        if auth_token is not None and not auth_token:
            raise ValueError("auth_token: expected a non-empty string or None")
        self._store = store
        self._upstream = upstream_base(upstream_url)
        self._host, self._port = host, port
        self._auth = auth_token
        self._max_body = max_body_bytes
        self._upstream_timeout = upstream_timeout_s
        self._connect_timeout = connect_timeout_s
        self._inline = store_writes == "inline"
        self._upstream_headers = dict(upstream_headers or {})
        self._routes = routes
        self._strict_tools = strict_tools
        self._continuity = continuity
        self._tool_parser = get_tool_parser(tool_parser).name  # an unknown name fails here
        self._continuator: Continuator | None = None
        self._registry = EpisodeRegistry(store)
        self.unattributed_calls = 0
        """LLM calls refused because they named no episode (flagged, never guessed)."""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._url = ""
        self._thread = LoopThread("fulmen-gateway")
        path = getattr(store, "path", None)
        self._lock = StoreLock(path) if isinstance(path, Path) else _NoLock()

    # --------------------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8400``. Raises RuntimeError before start."""
        if not self._url:
            raise RuntimeError("the gateway is not started: call start() or start_in_thread()")
        return self._url

    @property
    def continuity_stats(self) -> ContinuityStats:
        """With ``continuity``: calls served token-in, and served normally by reason (zeros
        before start or without ``continuity``)."""
        if self._continuator is None:
            return ContinuityStats()
        return self._continuator.stats

    @property
    def store(self) -> Store:
        """The store the gateway records into."""
        return self._store

    def episode_url(self, episode_id: str) -> str:
        """``{url}/rollout/{episode_id}``; the agent's OpenAI base URL is this plus ``/v1``."""
        return f"{self.url}/rollout/{episode_id}"

    async def _run_blocking(self, fn: Callable[[], Any]) -> Any:
        if self._inline:
            return fn()
        return await asyncio.to_thread(fn)

    async def start(self) -> str:
        """Start serving on the running loop; returns the base URL."""
        if self._runner is not None:
            raise RuntimeError("the gateway is already started")
        self._lock.acquire()  # one gateway per store (see store_lock)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1024, keepalive_timeout=60),
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=self._connect_timeout, sock_read=self._upstream_timeout
            ),
            trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            headers=self._upstream_headers,
        )
        if self._continuity:
            self._continuator = Continuator(self._upstream, self._session, self._tool_parser)
        proxy = Proxy(
            store=self._store,
            registry=self._registry,
            upstream=self._upstream,
            session=self._session,
            max_body_bytes=self._max_body,
            upstream_timeout_s=self._upstream_timeout,
            run_blocking=self._run_blocking,
            routes=self._routes,
            strict_tools=self._strict_tools,
            continuity=self._continuator,
        )
        app = web.Application(middlewares=[self._middleware], client_max_size=self._max_body)
        self._add_routes(app, proxy)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, auto_decompress=False)
        await runner.setup()
        if runner.server is not None:  # parser errors answered as JSON (see http_guard)
            runner.server.__class__ = JsonErrorServer
        try:
            site = web.TCPSite(runner, self._host, self._port)
            await site.start()
        except OSError:
            await runner.cleanup()
            await self._session.close()
            self._lock.release()
            raise
        self._runner = runner
        host, port = runner.addresses[0][:2]
        host = f"[{host}]" if ":" in host else host
        self._url = f"http://{host}:{port}"
        _log.info("gateway on %s → upstream %s", self._url, self._upstream)
        return self._url

    async def stop(self) -> None:
        """Stop serving and close the upstream connections (idempotent)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._lock.release()

    def start_in_thread(self) -> str:
        """Serve from a daemon thread running its own loop (for sync callers); returns the URL."""
        self._thread.start()
        try:
            return self._thread.run(self.start(), timeout=60)
        except BaseException:
            self._thread.stop()
            raise

    def stop_thread(self) -> None:
        """Stop a gateway started with :meth:`start_in_thread` (no-op otherwise)."""
        if self._thread.running:
            self._thread.run(self.stop(), timeout=60)
            self._thread.stop()

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def __enter__(self) -> Gateway:
        self.start_in_thread()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_thread()

    # --------------------------------------------------------------------------- HTTP

    def _add_routes(self, app: web.Application, proxy: Proxy) -> None:
        def episode_call(chat: bool) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
            async def handler(request: web.Request) -> web.StreamResponse:
                episode_id = request.match_info.get("episode_id")
                header = request.headers.get("X-Episode-Id")
                if episode_id is None:
                    episode_id = header
                elif header is not None and header != episode_id:
                    raise GatewayError(
                        f"header X-Episode-Id {header!r} contradicts the episode in the URL "
                        f"{episode_id!r}: send one of them",
                        status=400,
                        code="episode_mismatch",
                    )
                if not episode_id:
                    self.unattributed_calls += 1
                    _log.warning(
                        "refused an LLM call to %s that names no episode (%d so far): the "
                        "agent's client is not pointed at an episode URL and sent no "
                        "X-Episode-Id",
                        request.path,
                        self.unattributed_calls,
                    )
                    raise GatewayError(
                        "this LLM call names no episode: point the agent's OpenAI client at "
                        f"{self.url}/rollout/<episode_id>/v1, or send the header "
                        "X-Episode-Id: <episode_id>",
                        status=400,
                        code="no_episode",
                    )
                return await proxy.generate(request, episode_id, chat)

            return handler

        async def unsupported(request: web.Request) -> web.Response:
            raise GatewayError(
                _UNSUPPORTED.format(path=request.path), status=404, code="unsupported_route"
            )

        async def no_route(request: web.Request) -> web.Response:
            raise GatewayError(
                f"no route {request.method} {ascii(request.path)[1:-1][:200]}: the gateway serves "
                "the LLM routes under /v1 and /rollout/<episode>/v1, POST /episodes, the "
                "episode routes under /rollout/<episode> and GET /healthz",
                status=404,
                code="not_found",
            )

        add = app.router.add_route
        for prefix in ("/rollout/{episode_id}/v1", "/v1"):
            add(
                "POST",
                f"{prefix}/chat/completions",
                episode_call(True),
                expect_handler=expect_handler,
            )
            add("POST", f"{prefix}/completions", episode_call(False), expect_handler=expect_handler)
            add("GET", f"{prefix}/models", proxy.models, expect_handler=expect_handler)
        ControlRoutes(self, max_body_bytes=self._max_body, run_blocking=self._run_blocking).add_to(
            app
        )
        for prefix in ("/rollout/{episode_id}/v1", "/v1"):
            add("*", prefix + "/{tail:.*}", unsupported, expect_handler=expect_handler)
        add("*", "/{tail:.*}", no_route, expect_handler=expect_handler)

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            check_headers(request)
            if self._auth is not None and request.path != "/healthz":
                self._authorize(request, self._auth)
            return await handler(request)
        except GatewayError as exc:
            return web.json_response(exc.body(), status=exc.status)
        except web.HTTPException as exc:
            message = f"{exc.reason}: {request.method} {ascii(request.path)[1:-1][:200]}"
            code = (
                "body_too_large"
                if exc.status == 413
                else "not_found"
                if exc.status == 404
                else None
            )
            return web.json_response(
                error_body(message, status=exc.status, code=code), status=exc.status
            )
        except Exception as exc:  # a bug: answer 500 with a body rather than a bare reset
            _log.exception("gateway error on %s %s", request.method, request.path)
            body = error_body(
                f"internal gateway error: {type(exc).__name__}: {exc}",
                status=500,
                code="internal_error",
            )
            return web.json_response(body, status=500)

    @staticmethod
    def _authorize(request: web.Request, admin: str) -> None:
        """Admin token: every route; an episode's token: that episode's routes (authority)."""
        header = request.headers.get("Authorization", "")
        given = header.removeprefix("Bearer ") if header.startswith("Bearer ") else ""
        episode_id = request.match_info.get("episode_id")
        if episode_id is None and request.path.startswith("/v1/"):
            episode_id = request.headers.get("X-Episode-Id")
        admin_only = request.method == "POST" and (
            request.path == "/episodes" or request.path.endswith("/finish")
        )
        if not allows(admin, given, episode_id, admin_only):
            raise GatewayError(
                "missing or wrong bearer token: send 'Authorization: Bearer <token>' (the "
                "OpenAI client's api_key): the gateway's auth_token, or for an agent its "
                "episode's own token (ctx.api_key), which covers only that episode's LLM "
                "calls, rewards and annotations",
                status=401,
                code="unauthorized",
            )

    # --------------------------------------------------------------------------- control

    def start_episode(
        self,
        task: Task,
        *,
        attempt: int = 1,
        group_id: str | None = None,
        episode_id: str | None = None,
        metadata: dict[str, object] | None = None,
    ) -> Episode:
        """Create a ``running`` episode; its LLM base URL is ``{url}/rollout/{id}/v1``.

        Raises:
            GatewayError: 400 invalid id or attempt, 409 the id already exists.
        """
        if isinstance(attempt, bool) or not isinstance(attempt, int) or not 1 <= attempt <= 10_000:  # pyright: ignore[reportUnnecessaryIsInstance] - HTTP input
            raise GatewayError(
                f"attempt: expected an integer from 1 to 10000, got {attempt!r}",
                status=400,
                code="invalid_request",
                param="attempt",
            )
        now = time.time()
        episode = Episode(
            id=check_episode_id(episode_id)
            if episode_id is not None
            else f"ep-{secrets.token_hex(6)}",
            task=task,
            attempt=attempt,
            status=EpisodeStatus.RUNNING,
            group_id=group_id,
            created_at=now,
            started_at=now,
            metadata=dict(metadata or {}),
        )
        self._registry.add(episode)
        return episode

    def add_reward(self, reward: Reward) -> None:
        """Record a reward. Raises :class:`GatewayError` 404 unknown / 409 finished episode."""
        self._registry.ensure_open(reward.episode_id)
        try:
            self._store.add_reward(reward)
        except EpisodeNotFound as exc:
            raise GatewayError(str(exc), status=404, code="episode_not_found") from exc

    def add_annotation(self, annotation: Annotation) -> None:
        """Record an adapter annotation for one of the episode's calls.

        Raises:
            GatewayError: 400 the request id is not one of this episode's (``{episode}.{seq}``),
                404 unknown episode, 409 finished episode.
        """
        episode_id = annotation.episode_id
        if not annotation.request_id.startswith(f"{episode_id}."):
            raise GatewayError(
                f"request_id {annotation.request_id!r} is not a call of episode {episode_id!r} "
                f"(expected '{episode_id}.<seq>': the response id without 'chatcmpl-')",
                status=400,
                code="invalid_annotation",
                param="request_id",
            )
        self._registry.ensure_open(episode_id)
        try:
            self._store.add_annotation(annotation)
        except EpisodeNotFound as exc:
            raise GatewayError(str(exc), status=404, code="episode_not_found") from exc

    def finish_episode(
        self,
        episode_id: str,
        *,
        status: EpisodeStatus,
        termination: TerminationReason,
        error: str | None = None,
        metadata: dict[str, object] | None = None,
    ) -> Episode:
        """Finish the episode: later LLM calls and rewards get 409. Returns its final state.

        Raises:
            GatewayError: 400 unfinished status, 404 unknown, 409 already finished.
        """
        if self._continuator is not None:
            self._continuator.forget(episode_id)
        return self._registry.finish(
            episode_id, status=status, termination=termination, error=error, metadata=metadata
        )

    def upstream_failures(self, episode_id: str) -> int:
        """Infrastructure failures recorded for the episode's LLM calls (upstream unreachable,
        timed out, 5xx, invalid answer, or 401/403/404/408/429), by any gateway on this store.

        Raises:
            GatewayError: 404 unknown episode.
        """
        try:
            return sum(f.infrastructure for f in self._store.failed_calls(episode_id))
        except EpisodeNotFound:
            raise GatewayError(
                f"unknown episode {episode_id!r}", status=404, code="episode_not_found"
            ) from None

    def get_episode(self, episode_id: str) -> Episode:
        """The episode's current state. Raises :class:`GatewayError` 404 when unknown."""
        try:
            return self._store.get_episode(episode_id)
        except EpisodeNotFound:
            raise GatewayError(
                f"unknown episode {episode_id!r}", status=404, code="episode_not_found"
            ) from None

    def is_open(self, episode_id: str) -> bool:
        """True while the episode accepts LLM calls and rewards."""
        try:
            self._registry.ensure_open(episode_id)
        except GatewayError:
            return False
        return True
