"""The dashboard's HTTP server (aiohttp): JSON endpoints, the page and its scripts.

Routes (every one but ``/healthz`` behind :class:`~fulmen.observe.dashboard.auth.AccessRules`):

=============================  ==========================================================
``GET /healthz``               ``{"ok": true}``
``GET /``                      the page (``static/index.html``; its script polls the API)
``GET /static/{name}``         ``app.js``, ``episode.js``, ``style.css``
``GET /vendor/plotly.min.js``  plotly.js from the installed ``plotly`` package (no CDN)
``GET /api/summary``           :meth:`DashboardData.summary`
``GET /api/curves``            :meth:`DashboardData.curves`
``GET /api/episodes``          :meth:`DashboardData.episodes` (query: the filters)
``GET /api/episodes/{id}``     :meth:`DashboardData.episode` (404 for an unknown id)
``GET /api/compare``           held-out tasks and versions; with ``task``, ``a``, ``b``: the pair
=============================  ==========================================================

Errors are ``{"error": {"message", "code"}}`` with 400 (bad query), 401 (token), 403 (host),
404 or 500. Data is read in one worker thread (:class:`DashboardData` is not thread-safe and
its reads block), so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import math
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from importlib.resources import files
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from fulmen.gateway.loop_thread import LoopThread
from fulmen.observe._optional import MissingDependencyError
from fulmen.observe.dashboard.auth import AccessRules, loopback_hosts
from fulmen.observe.dashboard.data import DashboardData
from fulmen.observe.dashboard.episodes import EpisodeFilter, FilterError
from fulmen.store.base import EpisodeNotFound

__all__ = ["Dashboard", "plotly_js"]

_log = logging.getLogger("fulmen.dashboard")
_T = TypeVar("_T")
_STATIC = {"app.js": "text/javascript", "episode.js": "text/javascript", "style.css": "text/css"}
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; object-src 'none'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def plotly_js() -> Path:
    """The ``plotly.min.js`` inside the installed ``plotly`` package (found without importing it).

    Raises:
        MissingDependencyError: plotly is not installed, or ships no ``plotly.min.js``.
    """
    spec = importlib.util.find_spec("plotly")
    roots = list(spec.submodule_search_locations or ()) if spec is not None else []
    for root in roots:
        path = Path(root) / "package_data" / "plotly.min.js"
        if path.is_file():
            return path
    raise MissingDependencyError(
        feature="fulmen dashboard (its charts)",
        package="plotly",
        install="pip install 'fulmen[dashboard]'",
    )


class _HTTPError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (recursively)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _dumps(value: Any) -> str:
    """Strict JSON (browsers reject NaN): a non-finite float anywhere becomes null."""
    try:
        return json.dumps(value, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(value), allow_nan=False)


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"message": message, "code": code}}, status=status)


class Dashboard:
    """The dashboard server of one :class:`DashboardData`.

    Args:
        data: What the endpoints read (the server closes it on :meth:`stop`).
        host: Interface to bind; loopback unless told otherwise.
        port: Port to bind (0: a free one; :attr:`url` tells which).
        auth_token: When set, the gateway's bearer-token rule applies (see
            :mod:`fulmen.observe.dashboard.auth`).

    Raises:
        MissingDependencyError: plotly (the ``dashboard`` extra) is not installed.

    Use ``await start()`` / ``await stop()`` inside a running loop, or :meth:`start_in_thread`
    / :meth:`stop_thread` from sync code.
    """

    def __init__(
        self,
        data: DashboardData,
        *,
        host: str = "127.0.0.1",
        port: int = 8401,
        auth_token: str | None = None,
    ) -> None:
        if auth_token is not None and not auth_token:
            raise ValueError("auth_token: expected a non-empty string or None")
        self._data = data
        self._host, self._port = host, port
        self._token = auth_token
        self._plotly = plotly_js()
        self._static = files("fulmen.observe.dashboard") / "static"
        self._rules = AccessRules(auth_token, cookie=f"fulmen_dashboard_{port}", hosts=None)
        self._executor: ThreadPoolExecutor | None = None
        self._runner: web.AppRunner | None = None
        self._url = ""
        self._thread = LoopThread("fulmen-dashboard")

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8401``. Raises RuntimeError before start."""
        if not self._url:
            raise RuntimeError("the dashboard is not started: call start() or start_in_thread()")
        return self._url

    @property
    def login_url(self) -> str:
        """The URL to open in a browser (with ``?token=`` when a token is set)."""
        return f"{self.url}/?token={self._token}" if self._token else f"{self.url}/"

    async def start(self) -> str:
        """Bind and serve; returns :attr:`url`. Raises OSError when the port is taken."""
        if self._runner is not None:
            raise RuntimeError("the dashboard is already started")
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{name}", self._static_file)
        app.router.add_get("/vendor/plotly.min.js", self._plotly_file)
        app.router.add_get("/api/summary", self._json(lambda r: self._data.summary()))
        app.router.add_get("/api/curves", self._json(lambda r: self._data.curves()))
        app.router.add_get("/api/episodes", self._json(self._episodes))
        app.router.add_get("/api/episodes/{episode_id}", self._json(self._episode))
        app.router.add_get("/api/compare", self._json(self._compare))
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="fulmen-dashboard-data")
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        port = int(runner.addresses[0][1])
        self._rules = AccessRules(
            self._token, cookie=f"fulmen_dashboard_{port}", hosts=loopback_hosts(self._host, port)
        )
        shown = f"[{self._host}]" if ":" in self._host else self._host
        self._url = f"http://{shown}:{port}"
        return self._url

    async def stop(self) -> None:
        """Stop serving and close the data (idempotent)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._executor is not None:
            executor, self._executor = self._executor, None
            await asyncio.get_running_loop().run_in_executor(executor, self._data.close)
            executor.shutdown(wait=True)

    def start_in_thread(self) -> str:
        """Serve from a background thread; returns :attr:`url`."""
        self._thread.start()
        try:
            return self._thread.run(self.start(), timeout=30)
        except BaseException:
            self._thread.stop()
            raise

    def stop_thread(self) -> None:
        """Stop the server started by :meth:`start_in_thread`."""
        if self._thread.running:
            self._thread.run(self.stop(), timeout=30)
            self._thread.stop()

    # ----------------------------------------------------------------------------- plumbing

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path != "/healthz":
            if not self._rules.host_allowed(request):
                return _error(403, "forbidden_host", f"Host {request.host!r} is not this dashboard")
            login = self._rules.login(request)
            if login is not None:
                return login
            if not self._rules.authorised(request):
                return _error(
                    401,
                    "unauthorized",
                    "missing or wrong token: open the URL fulmen dashboard printed "
                    "(/?token=...) or send 'Authorization: Bearer <token>'",
                )
        try:
            response = await handler(request)
        except _HTTPError as exc:
            response = _error(exc.status, exc.code, exc.message)
        except web.HTTPException as exc:
            response = _error(exc.status, "not_found" if exc.status == 404 else "http_error", exc.reason)
        except Exception:
            _log.exception("dashboard: %s %s failed", request.method, request.path)
            response = _error(500, "internal_error", "the dashboard failed on this request (see its log)")
        response.headers.update(_HEADERS)
        return response

    async def _in_data_thread(self, fn: Callable[[], _T]) -> _T:
        if self._executor is None:
            raise _HTTPError(503, "stopping", "the dashboard is stopping")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def _json(
        self, read: Callable[[web.Request], Any]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            data = await self._in_data_thread(lambda: read(request))
            return web.json_response(data, dumps=_dumps)

        return handler

    # ------------------------------------------------------------------------------- routes

    async def _healthz(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"ok": True})

    async def _index(self, request: web.Request) -> web.StreamResponse:
        html = (self._static / "index.html").read_text(encoding="utf-8")
        return web.Response(text=html, content_type="text/html")

    async def _static_file(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in _STATIC:
            raise _HTTPError(404, "not_found", f"no static file {name!r}")
        text = (self._static / name).read_text(encoding="utf-8")
        return web.Response(text=text, content_type=_STATIC[name])

    async def _plotly_file(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(self._plotly, headers={"Content-Type": "text/javascript"})

    def _episodes(self, request: web.Request) -> Any:
        try:
            flt = EpisodeFilter.from_query(request.query)
        except FilterError as exc:
            raise _HTTPError(400, "bad_filter", str(exc)) from None
        return self._data.episodes(flt)

    def _episode(self, request: web.Request) -> Any:
        episode_id = request.match_info["episode_id"]
        try:
            return self._data.episode(episode_id)
        except EpisodeNotFound:
            raise _HTTPError(404, "episode_not_found", f"no episode {episode_id!r}") from None

    def _compare(self, request: web.Request) -> Any:
        query = request.query
        if not any(query.get(k) for k in ("task", "a", "b")):
            return self._data.compare_options()
        task = query.get("task", "")
        if not task:
            raise _HTTPError(400, "bad_compare", "task: the held-out task id to compare on")
        versions: list[int] = []
        for name in ("a", "b"):
            raw = query.get(name, "")
            try:
                versions.append(int(raw))
            except ValueError:
                raise _HTTPError(
                    400, "bad_compare", f"{name}: expected a policy version (an integer), got {raw!r}"
                ) from None
        return self._data.compare(task, versions[0], versions[1])
