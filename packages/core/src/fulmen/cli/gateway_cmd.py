"""``fulmen gateway``: run the capture gateway in front of an inference server."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the ``gateway`` sub-command."""
    p: argparse.ArgumentParser = sub.add_parser(
        "gateway", help="run the capture gateway (an OpenAI-compatible proxy that records episodes)"
    )
    p.add_argument("--upstream", required=True, help="inference server base URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--store", default="fulmen.db", help="SQLite file (default: fulmen.db)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8400, help="port (default: 8400)")
    p.add_argument(
        "--auth-token",
        default=os.environ.get("FULMEN_AUTH_TOKEN"),
        help="require this bearer token (default: $FULMEN_AUTH_TOKEN, none when unset)",
    )
    p.add_argument("--upstream-timeout", type=float, default=300.0, help="seconds per upstream call")
    p.add_argument(
        "--continuity",
        action="store_true",
        help="exact-continuity mode: serve calls that extend the previous call token-in (docs/gateway.md)",
    )
    p.add_argument(
        "--tool-parser", default="hermes", help="with --continuity: the server's tool-call parser (default: hermes)"
    )
    p.add_argument(
        "--strict-tools",
        action="store_true",
        help="the server constrains every tool call (vLLM --tool-strict-level function|parameter)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C / SIGTERM."""
    from fulmen.gateway import Gateway
    from fulmen.store import open_store

    store = open_store(args.store)
    gateway = Gateway(
        store,
        args.upstream,
        host=args.host,
        port=args.port,
        auth_token=args.auth_token,
        upstream_timeout_s=args.upstream_timeout,
        continuity=args.continuity,
        tool_parser=args.tool_parser,
        strict_tools=args.strict_tools,
    )

    async def serve() -> None:
        url = await gateway.start()
        print(f"fulmen gateway on {url} → {args.upstream} (store: {args.store})", file=sys.stderr)
        print(f"episode endpoint: {url}/rollout/<episode>/v1", file=sys.stderr)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await gateway.stop()

    try:
        asyncio.run(serve())
    finally:
        store.close()
    return 0
