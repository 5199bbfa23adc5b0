"""The ``fulmen`` command line: gateway, episodes, show, train, eval, adapters, watch, dashboard,
export-otel.

Each sub-command lives in its own module and imports what it needs only when it runs.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import TextIO

from fulmen.errors import FulmenError, FulmenWarning

__all__ = ["UserFacingError", "main", "one_line"]


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
    """Entry point of the ``fulmen`` script; returns the exit status.

    Any :class:`~fulmen.errors.FulmenError` (a bad config, a missing backend or dependency, a
    store that cannot be read...) is printed as one line, ``fulmen COMMAND: error: MESSAGE``,
    and the status is 2; fulmen's warnings print as one ``warning:`` line each. Other
    exceptions are bugs and keep their traceback.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    command = str(args.command)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning(command, warnings.showwarning)
        try:
            return int(args.func(args) or 0)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        except FulmenError as exc:
            print(f"fulmen {command}: error: {one_line(str(exc))}", file=sys.stderr)
            return 2


def one_line(text: str) -> str:
    """``text`` on one line: its lines stripped and joined with spaces (empty ones dropped)."""
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


_ShowWarning = Callable[..., None]


def _show_warning(command: str, show: _ShowWarning) -> _ShowWarning:
    """A ``warnings.showwarning`` that prints fulmen's warnings as one line each and passes
    every other warning to ``show``."""

    def showwarning(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        if issubclass(category, FulmenWarning):
            print(f"fulmen {command}: warning: {one_line(str(message))}", file=sys.stderr)
            return
        show(message, category, filename, lineno, file, line)

    return showwarning


class UserFacingError(FulmenError):
    """A bad command-line argument; the message is the whole story for the user."""


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
