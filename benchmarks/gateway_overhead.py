"""Gateway overhead: latency added per call and throughput, through the gateway vs direct.

Three processes, so that no server shares an event loop with the load:

1. the upstream: the vLLM wire-format test double (``python -m fulmen_testkit.vllm_double``),
   optionally sleeping ``--latency-ms`` per call to stand in for generation time;
2. the gateway (this script with ``--serve-gateway``), recording into a fresh SQLite store;
3. the load generator (this script): ``c`` concurrent workers, each its own episode, each
   sending one chat call after another for ``--seconds`` (after a warm-up) on keep-alive
   connections.

"Direct" sends the request the gateway would send upstream (with ``return_token_ids`` and
``logprobs``), so the upstream does the same work both ways and the difference is the gateway's
own cost. "Gateway" sends the agent's plain request to ``/rollout/{episode}/v1``. Both are
measured in the same run, alternating, and printed as ratios. Not a timed test: run it by hand::

    uv run --locked python benchmarks/gateway_overhead.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

CONCURRENCY = (1, 16, 128)
MESSAGES = [
    {"role": "system", "content": "You are a careful calculator agent. Think, then answer."},
    {"role": "user", "content": "What is 17 times 23? Show the steps, then give the final number."},
]


@dataclass(frozen=True, slots=True)
class Result:
    calls: int
    seconds: float
    p50_ms: float
    p99_ms: float
    total_calls: int = 0
    """Every call of the run, warm-up included (for CPU per call)."""
    cpu_ms: tuple[float, ...] = ()
    """CPU ms per call of each watched process (gateway, upstream) over the whole run."""

    @property
    def rate(self) -> float:
        return self.calls / self.seconds


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_load(urls: list[str], body: bytes, args: argparse.Namespace, watch: list[int]) -> Result:
    """:func:`load`, plus the CPU time the ``watch`` processes spent per call."""
    before = [cpu_seconds(pid) for pid in watch]
    result = asyncio.run(load(urls, body, args.warmup, args.seconds))
    spent = [cpu_seconds(pid) - b for pid, b in zip(watch, before, strict=True)]
    cpu = tuple(1000 * s / max(result.total_calls, 1) for s in spent)
    return Result(
        result.calls, result.seconds, result.p50_ms, result.p99_ms, result.total_calls, cpu
    )


async def load(urls: list[str], body: bytes, warmup_s: float, seconds: float) -> Result:
    """One worker per URL, back-to-back calls; latencies of calls that end in the window."""
    latencies: list[float] = []
    total = 0
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=60)
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        start = time.perf_counter()
        begin, end = start + warmup_s, start + warmup_s + seconds

        async def worker(url: str) -> None:
            nonlocal total
            while (t0 := time.perf_counter()) < end:
                total += 1
                async with http.post(url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"{url}: HTTP {response.status}")
                t1 = time.perf_counter()
                if begin <= t1 <= end:
                    latencies.append(t1 - t0)

        await asyncio.gather(*(worker(u) for u in urls))
    return Result(
        calls=len(latencies),
        seconds=seconds,
        p50_ms=percentile(latencies, 0.5) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        total_calls=total,
    )


def spawn(args: list[str]) -> tuple[subprocess.Popen[str], str]:
    """Start a server process and read the URL it prints first."""
    process = subprocess.Popen(
        [sys.executable, *args], stdout=subprocess.PIPE, text=True, env={**os.environ}
    )
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    if not url.startswith("http"):
        process.kill()
        raise RuntimeError(f"{args}: did not print its URL (got {url!r})")
    return process, url


async def start_episodes(gateway: str, count: int) -> list[str]:
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        ids: list[str] = []
        for i in range(count):
            async with http.post(f"{gateway}/episodes", json={"task": {"id": f"bench-{i}"}}) as r:
                ids.append((await r.json())["id"])
    return ids


def measure(
    latency_ms: float, store_writes: str, args: argparse.Namespace
) -> list[dict[str, float]]:
    upstream, upstream_url = spawn([
        "-m", "fulmen_testkit.vllm_double", "--latency-ms", str(latency_ms),
        "--latency-jitter", str(args.jitter),
    ])  # fmt: skip
    folder = tempfile.mkdtemp(prefix="fulmen-bench-")
    gateway, gateway_url = spawn([
        __file__, "--serve-gateway", upstream_url, "--store", f"{folder}/store.db",
        "--store-writes", store_writes,
    ])  # fmt: skip
    rows: list[dict[str, float]] = []
    try:
        plain = {"model": "tiny", "messages": MESSAGES, "max_tokens": 48, "seed": 1}
        shaped = {**plain, "return_token_ids": True, "logprobs": True, "top_logprobs": 0}
        for c in args.concurrency:
            episodes = asyncio.run(start_episodes(gateway_url, c))
            via = [f"{gateway_url}/rollout/{e}/v1/chat/completions" for e in episodes]
            direct = [f"{upstream_url}/v1/chat/completions"] * c
            results: dict[str, list[Result]] = {"direct": [], "gateway": []}
            for _ in range(args.rounds):  # alternate so that drift hits both alike
                watch = [gateway.pid, upstream.pid]
                results["direct"].append(run_load(direct, json.dumps(shaped).encode(), args, watch))
                results["gateway"].append(run_load(via, json.dumps(plain).encode(), args, watch))
            d = _combine(results["direct"])
            g = _combine(results["gateway"])
            rows.append({
                "latency_ms": latency_ms, "c": c, "direct_p50": d.p50_ms, "gw_p50": g.p50_ms,
                "added_p50": g.p50_ms - d.p50_ms, "direct_p99": d.p99_ms, "gw_p99": g.p99_ms,
                "added_p99": g.p99_ms - d.p99_ms, "direct_rate": d.rate, "gw_rate": g.rate,
                "ratio": g.rate / d.rate, "gw_cpu": g.cpu_ms[0], "up_cpu": d.cpu_ms[1],
                "load": os.getloadavg()[0],
            })  # fmt: skip
            print(_row(rows[-1], store_writes), flush=True)
    finally:
        for process in (gateway, upstream):
            process.terminate()
            process.wait(10)
    return rows


def _combine(results: list[Result]) -> Result:
    """Median of the rounds' figures."""
    mid = len(results) // 2
    pick = sorted(results, key=lambda r: r.rate)[mid]
    p50 = sorted(r.p50_ms for r in results)[mid]
    p99 = sorted(r.p99_ms for r in results)[mid]
    cpu = tuple(sorted(column)[mid] for column in zip(*(r.cpu_ms for r in results), strict=True))
    return Result(pick.calls, pick.seconds, p50, p99, pick.total_calls, cpu)


def _row(r: dict[str, float], mode: str) -> str:
    return (
        f"| {r['latency_ms']:>4.0f} ms | {mode:<6} | {r['c']:>4.0f} | {r['direct_p50']:6.2f} | "
        f"{r['gw_p50']:6.2f} | {r['added_p50']:+6.2f} | {r['direct_p99']:6.2f} | {r['gw_p99']:6.2f} | "
        f"{r['added_p99']:+6.2f} | {r['direct_rate']:7.0f} | {r['gw_rate']:7.0f} | {r['ratio']:5.0%} | "
        f"{r['gw_cpu']:5.2f} | {r['up_cpu']:5.2f} | {r['load']:4.1f} |"
    )


HEADER = (
    "| upstream | writes | conc | direct p50 ms | gateway p50 ms | added p50 ms | direct p99 ms "
    "| gateway p99 ms | added p99 ms | direct calls/s | gateway calls/s | gateway/direct "
    "| gateway CPU ms/call | upstream CPU ms/call | load avg |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


async def one_loop(mode: str, calls: int, rounds: int) -> tuple[float, float, float, float]:
    """Double, gateway and client on ONE event loop, one call at a time: the gateway's own cost
    per call, free of cross-process scheduling. Returns (direct p50, gateway p50, direct CPU,
    gateway CPU) in ms per call (medians over rounds; CPU includes the client and the double)."""
    from fulmen.gateway import Gateway
    from fulmen.protocol import Task
    from fulmen.store import open_store
    from fulmen_testkit.vllm_double import VllmDouble

    double = VllmDouble()
    upstream = await double.start()
    store = open_store(f"{tempfile.mkdtemp(prefix='fulmen-bench-')}/store.db")
    gateway = Gateway(store, upstream, store_writes=mode)  # type: ignore[arg-type]
    url = await gateway.start()
    episode = gateway.start_episode(Task(id="one-loop")).id
    plain = {"model": "tiny", "messages": MESSAGES, "max_tokens": 48, "seed": 1}
    shaped = {**plain, "return_token_ids": True, "logprobs": True, "top_logprobs": 0}
    targets = {
        "direct": (f"{upstream}/v1/chat/completions", json.dumps(shaped).encode()),
        "gateway": (f"{url}/rollout/{episode}/v1/chat/completions", json.dumps(plain).encode()),
    }
    figures: dict[str, list[tuple[float, float]]] = {"direct": [], "gateway": []}
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http:
        for _ in range(rounds):
            for name, (target, body) in targets.items():
                latencies: list[float] = []
                cpu = time.process_time()
                for _ in range(calls):
                    t0 = time.perf_counter()
                    async with http.post(target, data=body, headers=headers) as response:
                        await response.read()
                    latencies.append(time.perf_counter() - t0)
                cpu = (time.process_time() - cpu) / calls
                figures[name].append((percentile(latencies, 0.5) * 1000, cpu * 1000))
    await gateway.stop()
    await double.stop()
    store.close()
    mid = rounds // 2
    d50, g50 = (sorted(x[0] for x in figures[k])[mid] for k in ("direct", "gateway"))
    dcpu, gcpu = (sorted(x[1] for x in figures[k])[mid] for k in ("direct", "gateway"))
    return d50, g50, dcpu, gcpu


def serve_gateway(upstream: str, store_path: str, store_writes: str) -> None:
    """Run a gateway until terminated; prints its URL first."""
    from fulmen.gateway import Gateway
    from fulmen.store import open_store

    async def main() -> None:
        gateway = Gateway(open_store(store_path), upstream, store_writes=store_writes)  # type: ignore[arg-type]
        print(await gateway.start(), flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--serve-gateway", metavar="UPSTREAM", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--store-writes", default="inline", choices=["inline", "thread", "both"])
    parser.add_argument("--latency-ms", type=float, nargs="+", default=[0.0, 20.0],
                        help="simulated generation time of the upstream per call")  # fmt: skip
    parser.add_argument("--jitter", type=float, default=0.5,
                        help="upstream latency spread: 0.5 = uniform +-50%% (0: lock-step)")  # fmt: skip
    parser.add_argument("--concurrency", type=int, nargs="+", default=list(CONCURRENCY))
    parser.add_argument("--seconds", type=float, default=2.0, help="measured window per run")
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median)")
    args = parser.parse_args()
    if args.serve_gateway:
        serve_gateway(args.serve_gateway, args.store, args.store_writes)
        return
    modes = ["inline", "thread"] if args.store_writes == "both" else [args.store_writes]
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
          f"load average {os.getloadavg()[0]:.1f}, upstream latency jitter +-{args.jitter:.0%}")  # fmt: skip
    print("\nOne event loop, one call at a time (the gateway's own cost per call):\n")
    print("| writes | direct p50 ms | gateway p50 ms | added ms | added CPU ms/call |")
    print("|---|---|---|---|---|")
    for mode in modes:
        d50, g50, dcpu, gcpu = asyncio.run(one_loop(mode, 300, args.rounds))
        print(f"| {mode} | {d50:.2f} | {g50:.2f} | {g50 - d50:+.2f} | {gcpu - dcpu:.2f} |")
    print("\nThree processes (upstream, gateway, load generator), concurrent workers:\n")
    print(HEADER)
    for latency in args.latency_ms:
        for mode in modes:
            measure(latency, mode, args)


if __name__ == "__main__":
    main()
