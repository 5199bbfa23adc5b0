"""``kill -9`` of the gateway under load: what the agents were told is what the store holds.

:func:`kill_under_load` runs the real gateway as its own process (``python -m fulmen.cli
gateway``) in front of an upstream (the vLLM wire-format test double, standing in for vLLM, in
another process), drives it with ``concurrency`` workers sending chat calls (``n`` = 1 to 4
choices, some streamed) to a pool of running episodes, and ``kills`` times kills the gateway
with ``SIGKILL`` at a random moment and starts it again on the same port and store. After each
restart, with the load going on, it reads the store (its own SQLite connection) and checks:

* **lost**: an *acknowledged* call (one whose HTTP 200 and whole body the client received; for a
  stream, every event up to ``[DONE]``) missing from the store;
* **altered**: an acknowledged call stored with other choices than the client received (count,
  order, text, finish reason);
* **partial**: any call in the store with fewer (or more) choices than it asked for. Each
  request names its own ``n`` in its user message, so calls the client never heard back from
  (in flight at the kill) are checked too: they may be stored whole or not at all.

A worker whose call fails (connection refused or reset while the gateway is down) retries
after a short pause; a failed call is never counted as acknowledged. The restarted gateway picks
the running episodes up from the store, so the same pool is used throughout.

Used by ``tests/core/test_gateway_kill.py`` (a few kills, seconds) and
``benchmarks/gateway_kill.py`` (the long run, figures in ``benchmarks/README.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from fulmen.protocol import Transition
from fulmen.store.sqlite import SQLiteStore

__all__ = ["MARK", "Ack", "KillReport", "check_store", "kill_under_load"]

MARK = "kill-load"
"""How the user message of every call of the load starts (then worker, count and ``n=N``)."""
_TIMEOUT = aiohttp.ClientTimeout(total=30, sock_connect=5)


@dataclass(frozen=True, slots=True)
class Ack:
    """One acknowledged call: its request id and the choices the client received, by index."""

    request_id: str
    n: int
    choices: tuple[tuple[str, str | None], ...]
    """``(text, finish_reason)`` per choice index."""


@dataclass(slots=True)
class KillReport:
    """What one run saw. ``lost``, ``altered`` and ``partial`` must be 0."""

    kills: int = 0
    acknowledged: int = 0
    """Calls whose answer the client received whole (each checked against the store)."""
    failed: int = 0
    """Calls that got no complete answer (gateway down or killed mid-call): never acknowledged."""
    stored_calls: int = 0
    """Calls in the store at the last check (acknowledged + whole calls killed before the answer)."""
    lost: int = 0
    altered: int = 0
    partial: int = 0
    checks: int = 0
    """Store checks made (one after each restart, one at the end)."""
    seconds: float = 0.0
    restart_s: list[float] = field(default_factory=list[float])
    """Seconds from each kill until the new gateway answered ``/healthz``."""
    problems: list[str] = field(default_factory=list[str])
    """The first problems found, one line each (at most 20)."""

    def note(self, problem: str) -> None:
        if len(self.problems) < 20:
            self.problems.append(problem)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Processes:
    """The upstream double and the gateway, each its own process."""

    def __init__(self, store: Path, latency_ms: float) -> None:
        self.store = store
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.upstream = subprocess.Popen(
            [sys.executable, "-m", "fulmen_testkit.vllm_double", "--latency-ms", str(latency_ms),
             "--latency-jitter", "0.8"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=self._env,
        )  # fmt: skip
        assert self.upstream.stdout is not None
        self.upstream_url = self.upstream.stdout.readline().strip()
        if not self.upstream_url.startswith("http"):
            self.close()
            raise RuntimeError("the upstream double did not start")
        self.gateway: subprocess.Popen[bytes] | None = None
        self.log = store.with_name(store.name + ".gateway.log")

    def start_gateway(self) -> None:
        with self.log.open("ab") as log:  # every start's stderr, for when one does not come up
            self.gateway = subprocess.Popen(
                [sys.executable, "-m", "fulmen.cli", "gateway", "--upstream", self.upstream_url,
                 "--store", str(self.store), "--port", str(self.port), "--upstream-timeout", "20"],
                stdout=subprocess.DEVNULL, stderr=log, env=self._env,
            )  # fmt: skip

    def kill_gateway(self) -> None:
        if self.gateway is not None:
            self.gateway.send_signal(signal.SIGKILL)
            self.gateway.wait(timeout=30)
            self.gateway = None

    def close(self) -> None:
        self.kill_gateway()
        self.upstream.terminate()
        try:
            self.upstream.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.upstream.kill()
            self.upstream.wait(timeout=10)


async def _until_healthy(
    procs: _Processes, http: aiohttp.ClientSession, deadline_s: float = 120.0
) -> None:
    url = procs.url
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, OSError):
            async with http.get(url + "/healthz") as r:
                if r.status == 200:
                    return
        await asyncio.sleep(0.05)
    tail = procs.log.read_text(errors="replace")[-2000:] if procs.log.exists() else ""
    raise RuntimeError(
        f"the gateway at {url} did not come up in {deadline_s:.0f} s; its stderr:\n{tail}"
    )


def _request(worker: int, count: int, rng: random.Random) -> dict[str, Any]:
    n = rng.choice((1, 1, 2, 3, 4))
    body: dict[str, Any] = {
        "model": "tiny",
        "messages": [{"role": "user", "content": f"{MARK} w{worker} c{count} n={n}"}],
        "max_tokens": 12,
        "n": n,
    }
    if rng.random() < 0.25:
        body["stream"] = True
    return body


async def _read_stream(
    response: aiohttp.ClientResponse, n: int
) -> list[tuple[str, str | None]] | None:
    texts = [""] * n
    finish: list[str | None] = [None] * n
    done = False
    async for raw in response.content:
        line = raw.decode().strip()
        if not line.startswith("data: "):
            continue
        data = line[6:]
        if data == "[DONE]":
            done = True
            break
        event = json.loads(data)
        for c in event.get("choices", []):
            i = int(c["index"])
            texts[i] += (c.get("delta") or {}).get("content") or ""
            finish[i] = c.get("finish_reason") or finish[i]
    return list(zip(texts, finish, strict=True)) if done else None


async def _call(
    http: aiohttp.ClientSession, url: str, body: dict[str, Any]
) -> tuple[str, list[tuple[str, str | None]]] | None:
    """One call; ``(request id, choices)`` when the client received the whole answer, else None."""
    async with http.post(url, json=body) as response:
        if response.status != 200:
            await response.read()
            return None
        request_id = response.headers.get("X-Request-Id")
        if body.get("stream"):
            choices = await _read_stream(response, int(body["n"]))
        else:
            data = await response.json()
            ordered = sorted(data["choices"], key=lambda c: int(c["index"]))
            choices = [(c["message"].get("content") or "", c.get("finish_reason")) for c in ordered]
        if request_id is None or choices is None:
            return None
        return request_id, choices


def check_store(store: Path, acks: list[Ack], report: KillReport) -> None:
    """Compare the store with the acknowledged calls (see the module docstring); the report
    keeps the worst count of each kind over its checks."""
    calls: dict[str, list[Transition]] = {}
    with SQLiteStore(store) as db:  # its own connection, beside the gateway's
        cursor = 0
        while page := db.transitions_since(cursor, limit=5000):
            for _, t in page:
                calls.setdefault(t.request_id, []).append(t)
            cursor = page[-1][0]
    report.checks += 1
    report.stored_calls = len(calls)
    lost = altered = partial = 0
    for request_id, choices in calls.items():
        prompt = str(choices[0].request_messages[-1].get("content"))
        if not prompt.startswith(MARK):
            continue
        asked = int(prompt.rsplit("n=", 1)[1])
        indexes = sorted(int(c.metadata["choice_index"]) for c in choices)
        if indexes != list(range(asked)):
            partial += 1
            report.note(f"partial: {request_id} asked n={asked}, stored choices {indexes}")
    for ack in acks:
        stored = calls.get(ack.request_id)
        if stored is None:
            lost += 1
            report.note(f"lost: acknowledged call {ack.request_id} is not in the store")
            continue
        got = tuple(
            (str(c.response_message.get("content") or ""), c.finish_reason)
            for c in sorted(stored, key=lambda c: int(c.metadata["choice_index"]))
        )
        if got != ack.choices:
            altered += 1
            report.note(f"altered: {ack.request_id} received {ack.choices}, stored {got}")
    report.lost = max(report.lost, lost)
    report.altered = max(report.altered, altered)
    report.partial = max(report.partial, partial)


async def _run(
    store: Path,
    *,
    kills: int,
    seconds_between: tuple[float, float],
    concurrency: int,
    episodes: int,
    latency_ms: float,
    seed: int,
) -> KillReport:
    rng = random.Random(seed)
    report = KillReport()
    acks: list[Ack] = []
    procs = _Processes(store, latency_ms)
    stop = asyncio.Event()
    started = time.monotonic()
    connector = aiohttp.TCPConnector(limit=concurrency + 8, force_close=False)
    try:
        procs.start_gateway()
        async with aiohttp.ClientSession(timeout=_TIMEOUT, connector=connector) as http:
            await _until_healthy(procs, http)
            ids: list[str] = []
            for i in range(episodes):
                body = {"task": {"id": f"kill-{i}"}}
                async with http.post(procs.url + "/episodes", json=body) as r:
                    ids.append(str((await r.json())["id"]))

            async def worker(w: int) -> None:
                wrng = random.Random(seed * 1000 + w)
                count = 0
                while not stop.is_set():
                    episode = wrng.choice(ids)
                    body = _request(w, count, wrng)
                    count += 1
                    url = f"{procs.url}/rollout/{episode}/v1/chat/completions"
                    try:
                        got = await _call(http, url, body)
                    except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
                        got = None
                    if got is None:
                        report.failed += 1
                        await asyncio.sleep(0.05)
                        continue
                    request_id, choices = got
                    acks.append(Ack(request_id, int(body["n"]), tuple(choices)))

            tasks = [asyncio.create_task(worker(w)) for w in range(concurrency)]
            try:
                for _ in range(kills):
                    await asyncio.sleep(rng.uniform(*seconds_between))
                    killed_at = time.monotonic()
                    await asyncio.to_thread(procs.kill_gateway)
                    report.kills += 1
                    procs.start_gateway()
                    await _until_healthy(procs, http)
                    report.restart_s.append(time.monotonic() - killed_at)
                    snapshot = list(acks)  # acknowledged before this read: all must be stored
                    await asyncio.to_thread(check_store, store, snapshot, report)
                await asyncio.sleep(rng.uniform(*seconds_between))
            finally:
                stop.set()
                await asyncio.gather(*tasks, return_exceptions=True)
        report.seconds = time.monotonic() - started
        procs.kill_gateway()
        check_store(store, acks, report)
        report.acknowledged = len(acks)
        return report
    finally:
        procs.close()


def kill_under_load(
    store: Path,
    *,
    kills: int,
    seconds_between: tuple[float, float] = (0.5, 1.5),
    concurrency: int = 16,
    episodes: int = 32,
    latency_ms: float = 20.0,
    seed: int = 0,
) -> KillReport:
    """Run the load with ``kills`` kills of the gateway, ``seconds_between`` (a uniform range)
    apart, and return the report (see the module docstring). ``store`` must not exist yet."""
    if store.exists():
        raise ValueError(f"{store} exists: give kill_under_load a fresh store path")
    return asyncio.run(
        _run(
            store, kills=kills, seconds_between=seconds_between, concurrency=concurrency,
            episodes=episodes, latency_ms=latency_ms, seed=seed,
        )
    )  # fmt: skip
