"""verl's vLLM replicas as one upstream for fulmen's gateway.

verl starts one OpenAI-compatible vLLM HTTP server per rollout replica (``vllm serve`` inside
``vLLMReplica``; ``LLMServerManager.get_addresses()`` lists them as ``host:port``). fulmen's
:class:`~fulmen.gateway.Gateway` takes a single upstream URL, so:

* one replica (one GPU, or tensor parallelism over all GPUs): the gateway talks to it directly;
* several replicas: :class:`ReplicaPool` is a small HTTP proxy that sends each request to the
  replica with the fewest requests in flight (ties: round robin). Requests are forwarded
  byte for byte, streaming included, so token ids and logprobs reach the gateway unchanged.

Calls of one episode may land on different replicas; all replicas hold the same weights
(verl syncs them together), so only prefix-cache reuse is lost, never correctness.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import aiohttp
from aiohttp import web
from fulmen.gateway.loop_thread import LoopThread

__all__ = ["ReplicaPool", "replica_urls", "upstream_for"]

_HOP_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}
)


def replica_urls(addresses: Sequence[str]) -> list[str]:
    """``host:port`` addresses (verl's format, IPv6 in brackets) as ``http://`` base URLs.

    Raises:
        ValueError: no address (verl started no rollout replica).
    """
    if not addresses:
        raise ValueError("verl started no vLLM replica (LLMServerManager has no server address)")
    return [a if a.startswith(("http://", "https://")) else f"http://{a}" for a in addresses]


class ReplicaPool:
    """A least-busy HTTP proxy over several vLLM replicas (see the module docstring).

    Thread-safe to start and stop from sync code; serves on its own event-loop thread.

    Args:
        urls: base URLs of the replicas (``http://host:port``).
        host: interface to bind.
        timeout_s: longest an upstream may stay silent.
    """

    def __init__(
        self, urls: Sequence[str], *, host: str = "127.0.0.1", timeout_s: float = 600.0
    ) -> None:
        if not urls:
            raise ValueError("ReplicaPool: no replica URL")
        self._urls = [u.rstrip("/") for u in urls]
        self._busy = dict.fromkeys(self._urls, 0)
        self._order = itertools.cycle(range(len(self._urls)))
        self._host = host
        self._timeout = timeout_s
        self._thread = LoopThread("fulmen-verl-replicas")
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._url = ""

    @property
    def url(self) -> str:
        """The proxy's base URL. Raises RuntimeError before :meth:`start_in_thread`."""
        if not self._url:
            raise RuntimeError("ReplicaPool is not started")
        return self._url

    def pick(self) -> str:
        """The replica with the fewest requests in flight (round robin among ties)."""
        least = min(self._busy.values())
        for _ in range(len(self._urls)):
            url = self._urls[next(self._order)]
            if self._busy[url] == least:
                return url
        return self._urls[0]  # pragma: no cover - unreachable: some replica has the minimum

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        if self._session is None:
            raise web.HTTPServiceUnavailable(text="replica pool is stopping")
        url = self.pick()
        self._busy[url] += 1
        try:
            headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
            async with self._session.request(
                request.method,
                url + request.rel_url.path_qs,
                data=await request.read(),
                headers=headers,
            ) as upstream:
                response = web.StreamResponse(status=upstream.status)
                for key, value in upstream.headers.items():
                    if key.lower() not in _HOP_HEADERS and key.lower() != "content-encoding":
                        response.headers[key] = value
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response
        finally:
            self._busy[url] -= 1

    async def _start(self) -> str:
        timeout = aiohttp.ClientTimeout(total=None, sock_read=self._timeout)
        self._session = aiohttp.ClientSession(timeout=timeout, auto_decompress=False)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # pyright: ignore[reportOptionalMemberAccess, reportAttributeAccessIssue]
        return f"http://{self._host}:{port}"

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def start_in_thread(self) -> str:
        """Start serving; returns :attr:`url`."""
        self._thread.start()
        self._url = self._thread.run(self._start(), timeout=30)
        return self._url

    def stop_thread(self) -> None:
        """Stop serving (no-op when not started)."""
        if self._thread.running:
            self._thread.run(self._stop(), timeout=30)
            self._thread.stop()


def upstream_for(addresses: Sequence[str]) -> tuple[str, ReplicaPool | None]:
    """The URL the gateway should use for verl's replicas, and the pool to stop later (None
    when there is a single replica and the gateway talks to it directly)."""
    urls = replica_urls(addresses)
    if len(urls) == 1:
        return urls[0], None
    pool = ReplicaPool(urls)
    return pool.start_in_thread(), pool
