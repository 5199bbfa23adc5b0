"""``fulmen export-otel``: send recorded episodes to an OpenTelemetry (OTLP/HTTP) endpoint.

Each finished episode becomes one trace (:mod:`fulmen.observe.otel`): Phoenix, Jaeger,
Langfuse or any OTLP collector. ``--follow`` keeps exporting episodes as they finish until
Ctrl-C. Needs the OpenTelemetry SDK and OTLP/HTTP exporter installed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["register", "run_export"]


def register(sub: Any) -> None:
    """Add the ``export-otel`` sub-command."""
    p: argparse.ArgumentParser = sub.add_parser(
        "export-otel", help="export episodes as OpenTelemetry traces (OTLP/HTTP)"
    )
    p.add_argument("--store", default="fulmen.db", help="SQLite file (default: fulmen.db)")
    p.add_argument(
        "--endpoint",
        required=True,
        help="OTLP/HTTP endpoint, e.g. http://localhost:4318 (Jaeger, collector) or "
        "http://localhost:6006/v1/traces (Phoenix)",
    )
    p.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="HTTP header for the endpoint (repeatable), e.g. Authorization=Basic ...",
    )
    p.add_argument("--limit", type=int, help="only the last N finished episodes (default: all)")
    p.add_argument("--follow", action="store_true", help="keep exporting new episodes until Ctrl-C")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between polls (--follow)")
    p.add_argument("--service-name", default="fulmen", help="service.name resource attribute")
    p.add_argument(
        "--capture-content",
        action="store_true",
        help="also export messages, tool arguments and tool results (off by default)",
    )
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    """Export, then (``--follow``) keep exporting until Ctrl-C."""
    from fulmen.cli import UserFacingError
    from fulmen.observe import MissingDependencyError

    try:
        from fulmen.observe.otel import EpisodeSpanExporter, traces_endpoint
    except MissingDependencyError as exc:
        raise UserFacingError(str(exc)) from None
    from fulmen.observe.feed import EpisodeFeed
    from fulmen.store import open_store

    headers: dict[str, str] = {}
    for text in args.header:
        key, sep, value = str(text).partition("=")
        if not sep or not key:
            raise UserFacingError(f"--header {text!r}: expected KEY=VALUE")
        headers[key] = value
    try:
        endpoint = traces_endpoint(args.endpoint)
    except ValueError as exc:
        raise UserFacingError(str(exc)) from None
    if not Path(args.store).exists():
        raise UserFacingError(f"no store at {args.store!r}; pass --store PATH")
    store = open_store(args.store)
    exporter = EpisodeSpanExporter(
        endpoint=endpoint,
        headers=headers,
        service_name=args.service_name,
        capture_content=args.capture_content,
    )
    feed = EpisodeFeed(store, backlog=args.limit)
    total = 0
    try:
        while True:
            total += exporter.export(feed.poll())
            if not args.follow:
                break
            time.sleep(args.interval)
    except KeyboardInterrupt:
        pass
    finally:
        exporter.shutdown()
        store.close()
    print(f"exported {total} episodes to {endpoint}", file=sys.stderr)
    return 0
