"""Repeated ``kill -9`` of the gateway under load (issue 18): 0 lost acknowledged calls, 0 altered,
0 partial calls, checked against the store after every restart and at the end.

The gateway runs as its own process (``python -m fulmen.cli gateway``) in front of the vLLM
wire-format test double (another process, ``--latency-ms`` per call with ±80 % jitter, so calls
are in flight at every kill); ``--concurrency`` aiohttp workers send chat calls (``n`` 1-4, a
quarter streamed) to a pool of running episodes; every ``--between`` seconds (uniform range) the
gateway gets SIGKILL and is started again on the same port and store. An acknowledged call is
one whose HTTP 200 and whole body (a stream: up to ``[DONE]``) the client received. See
:mod:`fulmen_testkit.kill_load` for what is checked. Not a timed test: run it by hand::

    uv run --locked python benchmarks/gateway_kill.py                 # 20 kills
    uv run --locked python benchmarks/gateway_kill.py --kills 5 --between 2 4

Exit status 1 when anything was lost, altered or partial.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from fulmen_testkit.kill_load import kill_under_load


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--between", type=float, nargs=2, default=(8.0, 16.0), metavar=("MIN", "MAX"),
                        help="seconds between kills, drawn uniformly (default 8 16)")  # fmt: skip
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--episodes", type=int, default=128)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.monotonic()
        report = kill_under_load(
            Path(tmp) / "kill.db", kills=args.kills, seconds_between=tuple(args.between),
            concurrency=args.concurrency, episodes=args.episodes, latency_ms=args.latency_ms,
            seed=args.seed,
        )  # fmt: skip
        wall = time.monotonic() - started
    load_after = os.getloadavg()
    print(f"kills: {report.kills} (store checked {report.checks} times: after each restart and at the end)")
    print(f"acknowledged calls: {report.acknowledged}; lost {report.lost}, altered {report.altered}")
    print(f"calls in the store: {report.stored_calls} (acknowledged + whole calls killed before the answer); "
          f"partial {report.partial}")  # fmt: skip
    print(f"calls with no complete answer (gateway down or killed mid-call): {report.failed}")
    if report.restart_s:
        print(f"kill -> healthy again: median {statistics.median(report.restart_s):.2f} s, "
              f"max {max(report.restart_s):.2f} s")  # fmt: skip
    print(f"wall {wall:.0f} s; load average before {load_before[0]:.1f}, after {load_after[0]:.1f}")
    for problem in report.problems:
        print("  " + problem)
    return 1 if report.lost or report.altered or report.partial else 0


if __name__ == "__main__":
    sys.exit(main())
