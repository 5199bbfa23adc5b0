"""``python -m fulmen_testkit.vllm_double``: serve the vLLM test double (prints its URL)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Sequence

from fulmen_testkit.vllm_double.server import VllmDouble

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> None:
    """CLI: serve the double until interrupted; prints ``URL`` on its first stdout line."""
    parser = argparse.ArgumentParser(
        prog="python -m fulmen_testkit.vllm_double",
        description="Serve the vLLM wire-format TEST DOUBLE (not vLLM) until interrupted.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="simulated generation time")
    parser.add_argument(
        "--latency-jitter", type=float, default=0.0, help="spread of that time (0.5: +-50%%)"
    )
    parser.add_argument("--policy-version", type=int, default=None)
    args = parser.parse_args(argv)
    double = VllmDouble(
        model=args.model,
        latency_s=args.latency_ms / 1000,
        latency_jitter=args.latency_jitter,
        policy_version=args.policy_version,
        host=args.host,
        port=args.port,
    )

    async def serve() -> None:
        print(await double.start(), flush=True)
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
