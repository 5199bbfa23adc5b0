"""The ``fulmen`` command line: gateway, episodes, show, train, eval, adapters, watch, dashboard,
export-otel.

Each sub-command lives in its own module and imports what it needs only when it runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    from fulmen.cli import (
        adapters_cmd,
        dashboard_cmd,
        gateway_cmd,
        inspect_cmd,
        otel_cmd,
        train_cmd,
        watch_cmd,
    )

    parser = argparse.ArgumentParser(
        prog="fulmen", description="Train existing LLM agents with reinforcement learning."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    gateway_cmd.register(sub)
    inspect_cmd.register(sub)
    train_cmd.register(sub)
    adapters_cmd.register(sub)
    watch_cmd.register(sub)
    dashboard_cmd.register(sub)
    otel_cmd.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fulmen`` script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except UserFacingError as exc:
        print(f"fulmen {args.command}: error: {exc}", file=sys.stderr)
        return 2


class UserFacingError(Exception):
    """An error whose message is the whole story for the user (no traceback)."""


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
