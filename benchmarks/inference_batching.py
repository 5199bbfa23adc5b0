"""Embedded inference server: generated tokens/s with batching vs one request at a time.

Two server processes serve the same reference tiny model (``fulmen_local.model.build``, preset
``tiny``: ~0.65 M parameters, 103-character vocabulary, context 512, random init) through the
OpenAI chat API: one with ``max_batch_size=64`` (continuous batching), one with
``max_batch_size=1`` (requests served one at a time). The load generator (this process) runs
``c`` concurrent workers for c in 1/8/32; each sends chat requests one after another (fixed
``max_tokens``, ``ignore_eos`` so every request generates the same number of tokens, sampling
with a per-request seed, logprobs and token ids requested as the gateway does). Both servers
are measured in the same run, alternating round by round (``--rounds``, the order rotating each
round) so that a change in machine load hits both, and the ratio is printed. Only one server is
loaded at a time; the idle one sleeps on a condition variable. Besides wall-clock tokens/s the
script reports tokens per CPU second of the server process, which is less sensitive to other
processes sharing the machine.

``--baseline-src DIR`` adds a third server, batched like the first, that imports fulmen from
another source tree (``DIR/packages/core/src`` and ``DIR/packages/local-backend/src``, e.g. an
older commit unpacked with ``git archive``), to compare an engine change with its predecessor
in the same run (column ``vs base``).

Threads: each server uses ``--threads`` torch threads (default 1). The model's matrices are tiny,
so a second intra-op thread buys little, and on a 2-core machine shared with the HTTP loop, the
load generator and other processes, OpenMP oversubscription made a 2-thread server up to 10x
slower per token. Not a timed test: run it by hand::

    uv run --locked python benchmarks/inference_batching.py [--threads 1] [--json out.json]
    git archive HEAD~1 packages benchmarks | tar -x -C /tmp/before
    uv run --locked python benchmarks/inference_batching.py --baseline-src /tmp/before
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

CONCURRENCY = (1, 8, 32)
MESSAGES = [
    {"role": "system", "content": "You are a careful calculator agent."},
    {"role": "user", "content": "What is 17 times 23? Give the final number."},
]


@dataclass(slots=True)
class Result:
    """Totals over the rounds of one server at one concurrency level."""

    requests: int = 0
    tokens: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    latency_sum_s: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds

    @property
    def tokens_per_cpu_s(self) -> float:
        return self.tokens / self.cpu_seconds

    @property
    def mean_latency_s(self) -> float:
        return self.latency_sum_s / self.requests

    def as_dict(self) -> dict[str, float]:
        return {
            "requests": self.requests,
            "tokens": self.tokens,
            "seconds": self.seconds,
            "server_cpu_seconds": self.cpu_seconds,
            "tokens_per_s": self.tokens_per_s,
            "tokens_per_server_cpu_s": self.tokens_per_cpu_s,
            "mean_latency_s": self.mean_latency_s,
        }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serve(args: argparse.Namespace) -> None:
    """Server process: build the model, serve it, print the URL, run until stdin closes."""
    import torch
    from fulmen_local.model.build import build_tiny_model, count_parameters
    from fulmen_local.model.tokenizer import build_tokenizer
    from fulmen_local.server import InferenceServer

    torch.set_num_threads(args.threads)
    tokenizer = build_tokenizer()
    model = build_tiny_model(tokenizer, seed=0, preset="tiny")
    server = InferenceServer(
        model, tokenizer, model_name="tiny", max_batch_size=args.max_batch_size
    )
    url = server.start_in_thread()
    print(json.dumps({"url": url, "parameters": count_parameters(model)}), flush=True)
    sys.stdin.read()
    server.stop()


def start_server(
    max_batch_size: int, threads: int, source: Path | None = None
) -> tuple[subprocess.Popen[str], str, int]:
    """Start a server process (importing fulmen from ``source`` when given)."""
    env = dict(os.environ)
    if source is not None:
        paths = [str(source / "packages" / p / "src") for p in ("core", "local-backend")]
        env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")])
    cmd = [
        sys.executable,
        __file__,
        "--serve",
        "--max-batch-size",
        str(max_batch_size),
        "--threads",
        str(threads),
    ]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"server with max_batch_size={max_batch_size} failed to start")
    info = json.loads(line)
    return proc, info["url"], info["parameters"]


async def load(
    server: subprocess.Popen[str],
    url: str,
    concurrency: int,
    args: argparse.Namespace,
    into: Result,
) -> None:
    """``concurrency`` workers, each sending ``args.requests // concurrency`` requests back to
    back; adds wall time, tokens and the server's CPU time to ``into``."""
    per_worker = max(1, args.requests // concurrency)
    max_tokens = args.max_tokens
    timeout = aiohttp.ClientTimeout(total=600)
    latencies: list[float] = []
    tokens = 0

    async def worker(session: aiohttp.ClientSession, w: int) -> None:
        nonlocal tokens
        for i in range(per_worker):
            body = {
                "model": "tiny",
                "messages": MESSAGES,
                "max_tokens": max_tokens,
                "temperature": 1.0,
                "seed": w * 1000 + i,
                "ignore_eos": True,
                "return_token_ids": True,
                "logprobs": True,
            }
            start = time.perf_counter()
            async with session.post(f"{url}/v1/chat/completions", json=body) as resp:
                data = await resp.json()
                if resp.status != 200:
                    raise RuntimeError(f"HTTP {resp.status}: {data}")
            latencies.append(time.perf_counter() - start)
            tokens += data["usage"]["completion_tokens"]

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        await worker(session, -1)  # warm-up (connection, caches), not counted
        latencies.clear()
        tokens = 0
        cpu_before = cpu_seconds(server.pid)
        start = time.perf_counter()
        await asyncio.gather(*(worker(session, w) for w in range(concurrency)))
        seconds = time.perf_counter() - start
        into.cpu_seconds += cpu_seconds(server.pid) - cpu_before
    into.requests += len(latencies)
    into.tokens += tokens
    into.seconds += seconds
    into.latency_sum_s += sum(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads per server (see module doc)"
    )
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument(
        "--requests", type=int, default=32, help="requests per level and round (>= c)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per level")
    parser.add_argument("--levels", type=int, nargs="+", default=list(CONCURRENCY))
    parser.add_argument(
        "--baseline-src", type=Path, default=None, help="also serve fulmen from this source tree"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args()
    if args.serve:
        serve(args)
        return
    if args.baseline_src is not None and not (args.baseline_src / "packages").is_dir():
        parser.error(f"--baseline-src {args.baseline_src}: no packages/ folder there")
    servers: dict[str, tuple[subprocess.Popen[str], str]] = {}
    proc, url, params = start_server(64, args.threads)
    servers["batched"] = (proc, url)
    proc, url, _ = start_server(1, args.threads)
    servers["one_at_a_time"] = (proc, url)
    if args.baseline_src is not None:
        proc, url, _ = start_server(64, args.threads, args.baseline_src)
        servers["baseline_batched"] = (proc, url)
    rows: list[dict[str, object]] = []
    try:
        print(
            f"model: tiny Llama, {params:,} parameters; {args.max_tokens} tokens per request; "
            f"torch threads per server: {args.threads}; {args.rounds} alternating rounds"
        )
        base = "baseline_batched" in servers
        print(
            f"{'c':>3} {'1-at-a-time tok/s':>18} {'batched tok/s':>14} {'ratio':>6}"
            f" {'tok/CPU-s 1-at-a-time':>22} {'batched':>8} {'ratio':>6}"
            f" {'latency 1-at-a-time':>20} {'batched':>8}"
            + (f" {'base tok/s':>11} {'vs base':>8} {'CPU vs base':>12}" if base else "")
        )
        for c in args.levels:
            results = {name: Result() for name in servers}
            names = list(servers)
            for r in range(args.rounds):
                shift = r % len(names)
                for name in names[shift:] + names[:shift]:
                    proc, url = servers[name]
                    asyncio.run(load(proc, url, c, args, results[name]))
            bat, seq = results["batched"], results["one_at_a_time"]
            ratio = bat.tokens_per_s / seq.tokens_per_s
            cpu_ratio = bat.tokens_per_cpu_s / seq.tokens_per_cpu_s
            line = (
                f"{c:>3} {seq.tokens_per_s:>18.0f} {bat.tokens_per_s:>14.0f} {ratio:>5.1f}x"
                f" {seq.tokens_per_cpu_s:>22.0f} {bat.tokens_per_cpu_s:>8.0f} {cpu_ratio:>5.1f}x"
                f" {seq.mean_latency_s:>19.2f}s {bat.mean_latency_s:>7.2f}s"
            )
            row: dict[str, object] = {
                "concurrency": c,
                **{name: result.as_dict() for name, result in results.items()},
                "ratio": ratio,
                "cpu_ratio": cpu_ratio,
            }
            if base:
                old = results["baseline_batched"]
                vs, cpu_vs = (
                    bat.tokens_per_s / old.tokens_per_s,
                    bat.tokens_per_cpu_s / old.tokens_per_cpu_s,
                )
                line += f" {old.tokens_per_s:>11.0f} {vs:>7.2f}x {cpu_vs:>11.2f}x"
                row.update(vs_baseline=vs, cpu_vs_baseline=cpu_vs)
            print(line, flush=True)
            rows.append(row)
    finally:
        for proc, _ in servers.values():
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(30)
    if args.json is not None:
        report = {"parameters": params, "threads": args.threads, "results": rows}
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
