"""``fulmen watch``: a live terminal view of a training run or a gateway's store.

Shows episodes as they finish (agents, tool calls, reward and where it came from, how the
episode ended), per-agent reward and success, the current step's metrics and the alarms
(:mod:`fulmen.observe.alarms`); the view itself is :mod:`fulmen.observe.view`. Plain terminal
output (rich), so it works over SSH; Ctrl-C leaves it cleanly with exit status 0. ``--once``
prints one frame and exits.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

__all__ = ["register", "run_watch"]


def register(sub: Any) -> None:
    """Add the ``watch`` sub-command."""
    p: argparse.ArgumentParser = sub.add_parser(
        "watch", help="live view of a training run or a gateway's store (Ctrl-C to leave)"
    )
    p.add_argument("run_dir", nargs="?", help="run directory ([run] output_dir)")
    p.add_argument("--store", help="store file to watch (default: RUN_DIR/episodes.db)")
    p.add_argument("--refresh", type=float, default=1.0, help="seconds between updates (1)")
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    p.add_argument("--episodes", type=int, default=12, help="recent episodes shown (12)")
    p.add_argument(
        "--window", type=int, default=200, help="finished episodes the agent table covers (200)"
    )
    p.add_argument(
        "--threshold",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override an alarm threshold (repeatable; see docs/observability.md)",
    )
    p.set_defaults(func=run_watch)


def run_watch(args: argparse.Namespace) -> int:
    """Watch until Ctrl-C (or print one frame with ``--once``)."""
    from rich.console import Console
    from rich.live import Live

    from fulmen.cli import UserFacingError
    from fulmen.observe.alarms import AlarmThresholds, parse_threshold
    from fulmen.observe.state import RunState
    from fulmen.observe.view import render

    thresholds = AlarmThresholds()
    try:
        for text in args.threshold:
            thresholds = parse_threshold(text, thresholds)
    except ValueError as exc:
        raise UserFacingError(str(exc)) from None
    if args.run_dir is None and args.store is None:
        raise UserFacingError("pass a run directory (fulmen watch runs/NAME) or --store PATH")
    run_dir = Path(args.run_dir) if args.run_dir else None
    if run_dir is not None and not run_dir.is_dir():
        raise UserFacingError(f"no run directory {str(run_dir)!r} ([run] output_dir of the config)")
    if args.refresh <= 0:
        raise UserFacingError(f"--refresh {args.refresh}: must be > 0 seconds")
    store_path = Path(args.store) if args.store else (run_dir or Path()) / "episodes.db"
    if run_dir is None and not store_path.exists():
        raise UserFacingError(f"no store at {str(store_path)!r}; pass the gateway's --store PATH")
    state = RunState(
        metrics_path=run_dir / "metrics.jsonl" if run_dir is not None else None,
        store_path=store_path,
        thresholds=thresholds,
        window=args.window,
    )
    console = Console()
    try:
        state.refresh()
        if args.once:
            console.print(render(state, episodes=args.episodes))
            return 0
        with Live(
            render(state, episodes=args.episodes), console=console, auto_refresh=False
        ) as live:
            while True:
                time.sleep(args.refresh)
                state.refresh()
                live.update(render(state, episodes=args.episodes), refresh=True)
    except KeyboardInterrupt:
        return 0
    finally:
        state.close()
