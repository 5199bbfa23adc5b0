"""``fulmen dashboard``: a local web dashboard of a training run or a gateway's store.

Serves :mod:`fulmen.observe.dashboard` on 127.0.0.1 (``--host``/``--port`` to change), with the
gateway's bearer token when ``--auth-token`` / ``$FULMEN_AUTH_TOKEN`` is set; prints the URL to
open and serves until Ctrl-C / SIGTERM (exit status 0). Needs ``pip install 'fulmen[dashboard]'``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fulmen.cli.run_source import add_source_arguments, source_paths, thresholds_from

if TYPE_CHECKING:
    from fulmen.observe.dashboard import Dashboard, DashboardData

__all__ = ["register", "run_dashboard"]


def register(sub: Any) -> None:
    """Add the ``dashboard`` sub-command."""
    p: argparse.ArgumentParser = sub.add_parser(
        "dashboard", help="web dashboard of a training run or a gateway's store (Ctrl-C to stop)"
    )
    add_source_arguments(p, store_help="store file to show (default: RUN_DIR/episodes.db)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8401, help="port (default: 8401; 0: any free)")
    p.add_argument(
        "--auth-token",
        default=os.environ.get("FULMEN_AUTH_TOKEN"),
        help="require this bearer token, as the gateway does (default: $FULMEN_AUTH_TOKEN, "
        "none when unset)",
    )
    p.add_argument(
        "--config",
        help="the run's training config: its [credit] decides which calls are shown as "
        "trained or masked (default: grpo over every agent), its [alarms] the thresholds",
    )
    p.add_argument(
        "--tokenizer",
        help="tokenizer.json (or a model directory) to show token text (default: the run's "
        "newest checkpoint's, else the --config's base model's, else found once written)",
    )
    p.set_defaults(func=run_dashboard)


def run_dashboard(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C / SIGTERM."""
    from fulmen.cli import UserFacingError
    from fulmen.config import ConfigError, TrainConfig, load_config
    from fulmen.observe._optional import MissingDependencyError

    config: TrainConfig | None = load_config(args.config) if args.config else None  # every table
    thresholds = thresholds_from(args.threshold, config.alarms if config is not None else None)
    run_dir, store_path = source_paths(args.run_dir, args.store, command="dashboard")
    if not 0 <= args.port <= 65535:
        raise UserFacingError(f"--port {args.port}: expected 0..65535")
    if args.auth_token is not None and not args.auth_token:
        raise UserFacingError("--auth-token: empty; pass a token or leave it unset")
    try:
        from fulmen.observe.dashboard import (
            CreditSource,
            Dashboard,
            DashboardData,
            TokenText,
            find_tokenizer,
        )

        credit = (
            CreditSource.of(config, origin=f"[credit] of {args.config}") if config is not None else None
        )
        tokenizer: Path | None = Path(args.tokenizer) if args.tokenizer else None
        if tokenizer is None and run_dir is not None:
            tokenizer = find_tokenizer(run_dir)
        base = config.resolve(config.model.path) / "tokenizer.json" if config is not None else None
        if tokenizer is None and base is not None and base.is_file():
            tokenizer = base  # no checkpoint yet: the base model's (training keeps it as is)
        tokens = TokenText(tokenizer) if tokenizer is not None else None
    except (MissingDependencyError, ConfigError) as exc:
        raise UserFacingError(str(exc)) from None
    except (FileNotFoundError, ValueError) as exc:
        raise UserFacingError(f"--tokenizer: {exc}") from None
    data = DashboardData(
        store_path=store_path,
        run_dir=run_dir,
        thresholds=thresholds,
        credit=credit,
        tokens=tokens,
        find_tokens=args.tokenizer is None,
    )
    try:
        dashboard = Dashboard(data, host=args.host, port=args.port, auth_token=args.auth_token)
    except MissingDependencyError as exc:
        data.close()
        raise UserFacingError(str(exc)) from None
    return _serve(dashboard, args, data)


def _serve(dashboard: Dashboard, args: argparse.Namespace, data: DashboardData) -> int:
    from fulmen.cli import UserFacingError
    from fulmen.observe.dashboard.auth import LOOPBACK

    async def serve() -> None:
        try:
            await dashboard.start()
        except OSError as exc:
            raise UserFacingError(f"cannot listen on {args.host}:{args.port}: {exc}") from None
        print(f"fulmen dashboard of {data.run_dir or data.store_path}", file=sys.stderr)
        print(f"open {dashboard.login_url}", file=sys.stderr, flush=True)
        if args.host not in LOOPBACK and not args.auth_token:
            print(
                f"warning: serving on {args.host} without a token: anyone who can reach it sees "
                "the transcripts (set --auth-token or $FULMEN_AUTH_TOKEN)",
                file=sys.stderr,
            )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await dashboard.stop()

    try:
        asyncio.run(serve())
    finally:
        data.close()
    return 0
