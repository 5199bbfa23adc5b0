"""``fulmen adapters``: which framework adapters are installed, and why one does not load."""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the ``adapters`` sub-command."""
    p: argparse.ArgumentParser = sub.add_parser(
        "adapters", help="list installed framework adapters and why one failed to load"
    )
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print one line per registered adapter; exit status 1 when one fails to load."""
    from fulmen.adapters import discover_adapters

    infos = discover_adapters()
    if not infos:
        print("no fulmen adapters installed (pip install fulmen-langchain, fulmen-openai, ...)")
        return 0
    for info in infos:
        if args.json:
            row = {
                "name": info.name,
                "target": info.target,
                "distribution": info.distribution,
                "version": info.version,
                "ok": info.ok,
                "error": info.error,
            }
            print(json.dumps(row))
            continue
        where = f"{info.distribution} {info.version}" if info.distribution else "?"
        state = "ok" if info.ok else f"FAILED: {info.error}"
        print(f"{info.name:<16} {where:<24} {info.target:<40} {state}")
    return 0 if all(info.ok for info in infos) else 1
