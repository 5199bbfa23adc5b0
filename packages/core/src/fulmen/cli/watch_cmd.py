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
from typing import Any

from fulmen.cli.run_source import add_source_arguments, source_paths, thresholds_from

__all__ = ["register", "run_watch"]


def register(sub: Any) -> None:
    """Add the ``watch`` sub-command."""
    p: argparse.ArgumentParser = sub.add_parser(
        "watch", help="live view of a training run or a gateway's store (Ctrl-C to leave)"
    )
    add_source_arguments(p, store_help="store file to watch (default: RUN_DIR/episodes.db)")
    p.add_argument("--refresh", type=float, default=1.0, help="seconds between updates (1)")
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    p.add_argument("--episodes", type=int, default=12, help="recent episodes shown (12)")
    p.add_argument(
        "--window", type=int, default=200, help="finished episodes the agent table covers (200)"
    )
    p.set_defaults(func=run_watch)


def run_watch(args: argparse.Namespace) -> int:
    """Watch until Ctrl-C (or print one frame with ``--once``)."""
    from rich.console import Console
    from rich.live import Live

    from fulmen.cli import UserFacingError
    from fulmen.observe.state import RunState
    from fulmen.observe.view import render

    thresholds = thresholds_from(args.threshold)
    run_dir, store_path = source_paths(args.run_dir, args.store, command="watch")
    if args.refresh <= 0:
        raise UserFacingError(f"--refresh {args.refresh}: must be > 0 seconds")
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
