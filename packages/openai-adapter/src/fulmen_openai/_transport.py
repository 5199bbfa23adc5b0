"""One shared patch of the ``httpx`` and ``httpx2`` default transports, for fulmen's OpenAI
adapters.

The openai client (3.x) sends through ``httpx2`` by default and also accepts an explicit
``httpx`` client; the Agents SDK uses the same client. Both adapters of this package watch
those HTTP calls: :class:`Listener` objects registered with :func:`install` see every request
before it is sent (and may add headers) and every response once its headers arrive (and may ask
for its body). The patch wraps ``HTTPTransport.handle_request`` and
``AsyncHTTPTransport.handle_async_request`` of each library; it is installed when the first
listener registers and the original methods are put back when the last one leaves, whatever the
order in which adapters attach and detach.

Contract: the patch never changes what the caller gets. Requests, responses and exceptions pass
through unchanged (a response body is teed, never altered); a listener's failure is logged and
skipped. Listeners are called in ``priority`` order (lowest first) from the thread or task that
makes the call, so they see its context variables.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import logging
import threading
import zlib
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from types import ModuleType
from typing import Any, Protocol

__all__ = ["Exchange", "Listener", "install", "patched_methods", "uninstall"]

_log = logging.getLogger("fulmen.adapters.openai")

_MAX_BODY_BYTES = 8 * 1024 * 1024
"""Larger response bodies are not handed to listeners (they are still passed on whole)."""
_LIBRARIES = ("httpx", "httpx2")
_TARGETS = (("HTTPTransport", "handle_request"), ("AsyncHTTPTransport", "handle_async_request"))


class Exchange:
    """One HTTP call as the transport patch sees it. Listeners may write :attr:`owner` and
    :attr:`notes`, add request headers (:meth:`set_header`) and ask for the body
    (:meth:`watch_body`)."""

    def __init__(self, request: Any) -> None:
        self.request = request
        """The library's request object (``httpx.Request`` or ``httpx2.Request``)."""
        self.method: str = str(request.method)
        """HTTP method."""
        self.path: str = str(request.url.path)
        """URL path (``/rollout/<episode>/v1/chat/completions``...)."""
        self.owner: str | None = None
        """Framework adapter that owns this call (set by the first listener that claims it)."""
        self.notes: dict[str, Any] = {}
        """Free-form state listeners keep between the request and the response."""
        self.status: int | None = None
        """Response status, once the response headers arrived."""
        self.response_headers: Mapping[str, str] = {}
        """Response headers (case-insensitive mapping), once they arrived."""
        self._body_watchers: list[Callable[[bytes], None]] = []
        self._request_json: object = _UNSET

    def header(self, name: str) -> str | None:
        """A request header's value, or None."""
        value = self.request.headers.get(name)
        return None if value is None else str(value)

    def set_header(self, name: str, value: str) -> None:
        """Add or replace a request header (before the request is sent)."""
        self.request.headers[name] = value

    def request_json(self) -> Any:
        """The request body parsed as JSON, or None (not JSON, not readable, streamed)."""
        if self._request_json is _UNSET:
            self._request_json = None
            try:
                content = self.request.content
            except Exception:  # a streamed request body cannot be read here
                content = None
            if content:
                with contextlib.suppress(ValueError, UnicodeDecodeError):
                    self._request_json = json.loads(content)
        return self._request_json

    def watch_body(self, callback: Callable[[bytes], None]) -> None:
        """Call ``callback(body)`` with the decoded response body once the caller has read it
        or closed the response (an SSE stream is often closed right after ``[DONE]``, so the
        body may be a prefix). Not called for a body over 8 MiB or in an unknown content
        encoding. Only meaningful from :meth:`Listener.on_response`."""
        self._body_watchers.append(callback)


_UNSET = object()


class Listener(Protocol):
    """What an adapter registers with :func:`install`. Both methods must not raise (run the
    body under the adapter's guard) and must not block for long."""

    def on_request(self, exchange: Exchange) -> None:
        """Called before the request is sent."""
        ...

    def on_response(self, exchange: Exchange) -> None:
        """Called when the response headers arrived (status and headers are set)."""
        ...


_lock = threading.Lock()
_listeners: tuple[tuple[int, int, Listener], ...] = ()
_originals: dict[tuple[type, str], Any] = {}
_counter = 0


def install(listener: Listener, *, priority: int = 0) -> None:
    """Register ``listener`` (patching the transports if it is the first). Idempotent."""
    global _listeners, _counter
    with _lock:
        if any(entry[2] is listener for entry in _listeners):
            return
        if not _listeners:
            _patch()
        _counter += 1
        _listeners = tuple(sorted((*_listeners, (priority, _counter, listener))))


def uninstall(listener: Listener) -> None:
    """Unregister ``listener`` (restoring the transports if it was the last). Idempotent."""
    global _listeners
    with _lock:
        remaining = tuple(entry for entry in _listeners if entry[2] is not listener)
        if len(remaining) == len(_listeners):
            return
        _listeners = remaining
        if not _listeners:
            _unpatch()


def patched_methods() -> tuple[object, ...]:
    """The transport methods as they are now (a comparable snapshot for tests)."""
    return tuple(vars(cls).get(name) for cls, name in _transport_targets())


def _transport_targets() -> Iterator[tuple[type, str]]:
    for module in _libraries():
        for class_name, method in _TARGETS:
            yield getattr(module, class_name), method


def _libraries() -> list[ModuleType]:
    found: list[ModuleType] = []
    for name in _LIBRARIES:
        try:
            found.append(importlib.import_module(name))
        except ImportError:
            continue
    return found


def _patch() -> None:
    for module in _libraries():
        for class_name, method in _TARGETS:
            cls = getattr(module, class_name)
            original = vars(cls)[method]
            _originals[(cls, method)] = original
            wrapper = _async_wrapper if method.startswith("handle_async") else _sync_wrapper
            setattr(cls, method, wrapper(original, module))


def _unpatch() -> None:
    for (cls, method), original in _originals.items():
        setattr(cls, method, original)
    _originals.clear()


# ------------------------------------------------------------------------------- dispatch


def _begin(request: Any) -> tuple[Exchange, tuple[Listener, ...]] | None:
    listeners = tuple(entry[2] for entry in _listeners)
    if not listeners:
        return None
    try:
        exchange = Exchange(request)
    except Exception:
        _log.exception("fulmen could not read an outgoing request; it is sent unobserved")
        return None
    for listener in listeners:
        _call(listener.on_request, exchange)
    return exchange, listeners


def _end(begun: tuple[Exchange, tuple[Listener, ...]], response: Any, module: ModuleType) -> None:
    exchange, listeners = begun
    try:
        exchange.status = int(response.status_code)
        exchange.response_headers = response.headers
    except Exception:
        _log.exception("fulmen could not read a response; it is passed on unobserved")
        return
    for listener in listeners:
        _call(listener.on_response, exchange)
    if exchange._body_watchers:
        try:
            response.stream = _tee(module, response.stream, exchange)
        except Exception:
            _log.exception("fulmen could not watch a response body; it is passed on unobserved")


def _call(method: Callable[[Exchange], None], exchange: Exchange) -> None:
    try:
        method(exchange)
    except Exception:
        _log.exception("a fulmen transport listener failed; the call goes on")


def _sync_wrapper(original: Any, module: ModuleType) -> Any:
    @functools.wraps(original)
    def handle_request(self: Any, request: Any) -> Any:
        begun = _begin(request)
        response = original(self, request)
        if begun is not None:
            _end(begun, response, module)
        return response

    return handle_request


def _async_wrapper(original: Any, module: ModuleType) -> Any:
    @functools.wraps(original)
    async def handle_async_request(self: Any, request: Any) -> Any:
        begun = _begin(request)
        response = await original(self, request)
        if begun is not None:
            _end(begun, response, module)
        return response

    return handle_async_request


# ------------------------------------------------------------------------------- body tee


class _Collector:
    """Accumulates a body's bytes and hands the decoded body to the watchers once."""

    def __init__(self, exchange: Exchange) -> None:
        self._exchange = exchange
        self._parts: list[bytes] = []
        self._size = 0
        self._done = False

    def add(self, chunk: bytes) -> None:
        if self._size <= _MAX_BODY_BYTES:
            self._parts.append(chunk)
            self._size += len(chunk)

    def finish(self) -> None:
        if self._done:
            return
        self._done = True
        if self._size > _MAX_BODY_BYTES:
            return
        body = _decode(b"".join(self._parts), self._exchange.response_headers)
        if body is None:
            return
        for watcher in self._exchange._body_watchers:
            try:
                watcher(body)
            except Exception:
                _log.exception("a fulmen response body watcher failed; the call goes on")


def _decode(raw: bytes, headers: Mapping[str, str]) -> bytes | None:
    encoding = str(headers.get("content-encoding", "identity")).strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding in ("gzip", "deflate"):
        try:
            return zlib.decompress(raw, wbits=47)
        except zlib.error:
            return None
    _log.debug("response body in content-encoding %r is not observed", encoding)
    return None


@functools.cache
def _tee_classes(module: ModuleType) -> tuple[type, type]:
    """Byte-stream wrappers that subclass ``module``'s own stream types (the client checks)."""

    class SyncTee(module.SyncByteStream):
        def __init__(self, inner: Any, collector: _Collector) -> None:
            self._inner = inner
            self._collector = collector

        def __iter__(self) -> Iterator[bytes]:
            for chunk in self._inner:
                self._collector.add(chunk)
                yield chunk
            self._collector.finish()

        def close(self) -> None:
            try:
                self._inner.close()
            finally:
                self._collector.finish()

    class AsyncTee(module.AsyncByteStream):
        def __init__(self, inner: Any, collector: _Collector) -> None:
            self._inner = inner
            self._collector = collector

        async def __aiter__(self) -> AsyncIterator[bytes]:
            async for chunk in self._inner:
                self._collector.add(chunk)
                yield chunk
            self._collector.finish()

        async def aclose(self) -> None:
            try:
                await self._inner.aclose()
            finally:
                self._collector.finish()

    return SyncTee, AsyncTee


def _tee(module: ModuleType, stream: Any, exchange: Exchange) -> Any:
    sync_tee, async_tee = _tee_classes(module)
    collector = _Collector(exchange)
    if isinstance(stream, module.AsyncByteStream):
        return async_tee(stream, collector)
    return sync_tee(stream, collector)
