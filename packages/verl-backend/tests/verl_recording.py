"""A recorded batch of fulmen transitions: real runner → real gateway → vLLM test double → SQLite.

Shared by the verl backend's tests (no verl import here).
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from fulmen.batch import Batch, build_batch, group_records
from fulmen.context import EpisodeContext
from fulmen.credit import GRPOAssigner
from fulmen.gateway.app import Gateway
from fulmen.protocol import EpisodeRecord, Task
from fulmen.runner import Runner
from fulmen.store import open_store
from fulmen_testkit.vllm_double import VllmDouble

__all__ = ["agent", "record_batch", "reward"]


def _chat(ctx: EpisodeContext, messages: list[dict[str, Any]], max_tokens: int) -> str:
    body = json.dumps({"model": "tiny", "messages": messages, "max_tokens": max_tokens}).encode()
    request = urllib.request.Request(
        f"{ctx.base_url}/chat/completions", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return str(answer["choices"][0]["message"]["content"] or "")


def agent(task: Task, ctx: EpisodeContext) -> str:
    """One call, or two for tasks with ``turns = 2`` (the second sees the first answer)."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": str(task.data["question"])}]
    text = _chat(ctx, messages, max_tokens=int(task.data.get("max_tokens", 6)))
    if task.data.get("turns", 1) == 2:
        messages += [{"role": "assistant", "content": text}, {"role": "user", "content": "again"}]
        text = _chat(ctx, messages, max_tokens=4)
    return text


def reward(task: Task, output: str | None, ctx: EpisodeContext) -> float:
    """A continuous score of the answer (varies within a group, so groups carry signal)."""
    return float(len(output or "") % 7)


def record_batch(
    tmp: Path, *, turns: int = 1, group_size: int = 4
) -> tuple[list[EpisodeRecord], Batch]:
    """Run 3 tasks x ``group_size`` episodes through the real stack; return the records and the
    GRPO batch (per-call rows) built from them."""
    double = VllmDouble()
    double.start_in_thread()
    store = open_store(tmp / "episodes.db")
    gateway = Gateway(store, double.url)
    gateway.start_in_thread()
    try:
        tasks = [
            Task(
                id=f"t{i}",
                data={
                    "question": f"what is {i} + {i}?" * (i + 1),
                    "turns": turns,
                    "max_tokens": 3 + 2 * i,
                },
            )
            for i in range(3)
        ]
        runner = Runner(gateway, concurrency=4, timeout_s=60, reward_fn=reward)
        results = runner.run(
            agent,
            tasks,
            group_size=group_size,
            group_prefix="step1",
            episode_metadata=lambda task, k: {"sampling": {"temperature": 1.0, "seed": 100 + k}},
        )
        records = store.records([r.episode.id for r in results])
    finally:
        gateway.stop_thread()
        double.stop_thread()
        store.close()
    return records, build_batch(group_records(records), GRPOAssigner(drop_no_signal=False))
