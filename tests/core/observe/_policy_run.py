"""A run with per-agent policies (``[[policy]]``), written by the real pieces: a real gateway
with policy routes in front of the vLLM wire-format double (serving the base as ``policy`` and
the adapters ``planner`` and ``solver``, as the embedded server does), the real openai client
naming each call's agent in ``X-Fulmen-Agent``, a real SQLite store, and ``metrics.jsonl`` rows
whose per-policy keys come from :func:`fulmen.policies.policy_step_metrics` (the driver's) plus
the update's ``policy/<name>/...`` keys for the policies it updated.

Episode ``ep-p<k>`` (k = 0, 1, 2) makes three calls: planner, solver, then ``critic`` (an agent no
policy covers: the frozen base). The double reports adapter version ``VERSIONS[k]`` for them.
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
from fulmen.policies import PolicyConfig, PolicyRoutes, policy_step_metrics
from fulmen.protocol import EpisodeStatus, Reward, Task, TerminationReason
from fulmen.store import open_store
from fulmen_testkit.harness import running_stack
from fulmen_testkit.vllm_double import VllmDouble

__all__ = ["POLICIES", "VERSIONS", "PolicyRun", "make_policy_run"]

POLICIES = (
    PolicyConfig(name="planner", agents=("planner",)),
    PolicyConfig(name="solver", agents=("solver",)),
)
VERSIONS = (0, 1, 2)
"""The adapter version the upstream reports for the calls of episode k."""


@dataclass(frozen=True, slots=True)
class PolicyRun:
    run_dir: Path
    store_path: Path
    rows: list[dict[str, Any]]
    """The train rows written to ``metrics.jsonl``."""


async def _episodes(store_path: Path) -> None:
    double = VllmDouble(model="policy", lora_modules=tuple(p.name for p in POLICIES))
    routes = PolicyRoutes.of(POLICIES, base="policy")
    async with running_stack(store_path, double=double, routes=routes) as stack:
        for k, version in enumerate(VERSIONS):
            double.policy_version = version
            task = Task(id=f"calc-{k}", data={"question": "What is 6*7?"})
            episode = await asyncio.to_thread(
                stack.gateway.start_episode, task, episode_id=f"ep-p{k}", group_id=f"step{k + 1}:g0"
            )
            llm = openai.AsyncOpenAI(
                base_url=stack.base_url(episode.id), api_key="x", timeout=20, max_retries=0
            )
            for agent in ("planner", "solver", "critic"):
                await llm.chat.completions.create(
                    model="policy", messages=[{"role": "user", "content": "What is 6*7?"}],
                    max_tokens=4, extra_headers={"X-Fulmen-Agent": agent},
                    extra_body={"return_token_ids": True, "logprobs": True},
                )  # fmt: skip
            await llm.close()
            reward = Reward(episode_id=episode.id, value=1.0, agent="solver")
            await asyncio.to_thread(stack.gateway.add_reward, reward)
            await asyncio.to_thread(
                stack.gateway.finish_episode, episode.id,
                status=EpisodeStatus.SUCCEEDED, termination=TerminationReason.COMPLETED,
            )  # fmt: skip


def make_policy_run(root: Path) -> PolicyRun:
    """Write the run into ``root/run`` (``episodes.db`` and ``metrics.jsonl``)."""
    run_dir = root / "run"
    run_dir.mkdir(parents=True)
    store_path = run_dir / "episodes.db"
    with ThreadPoolExecutor(1) as pool:  # its own loop: callers may run one (Playwright's sync API)
        pool.submit(asyncio.run, _episodes(store_path)).result(timeout=120)
    with open_store(store_path) as store:
        records = [store.record(f"ep-p{k}") for k in range(len(VERSIONS))]
    rows: list[dict[str, Any]] = []
    for step in (1, 2):
        driver, _ = policy_step_metrics(records, [], POLICIES)
        row: dict[str, Any] = {"kind": "train", "step": step, "reward_mean": 0.5, **driver}
        row["policy/solver/rows"] = 3.0
        row.update({"policy/solver/loss": 0.25 * step, "policy/solver/kl": 0.01 * step})
        row["policy/solver/grad_norm"] = 0.5
        if step == 1:  # the planner is updated at step 1 only
            row["policy/planner/rows"] = 2.0
            row.update({"policy/planner/loss": -0.125, "policy/planner/grad_norm": 1.5})
        rows.append(row)
    with (run_dir / "metrics.jsonl").open("w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return PolicyRun(run_dir, store_path, rows)
