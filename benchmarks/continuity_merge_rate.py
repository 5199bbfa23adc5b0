"""Merge rate of consecutive calls with and without the gateway's exact-continuity mode.

Runs tool-using example agents (``examples.calculator``: the plain OpenAI client;
``examples.langchain_calculator``: a LangGraph graph) through a real gateway in front of a
running inference server, twice: ``Gateway(continuity=False)`` and ``continuity=True``. For
each run it builds merged rows (``fulmen.batch.build_batch(mode="merged")``) and prints
``merged_calls / (merged_calls + merge_breaks)``: the share of follow-up calls whose prompt
starts with the previous call's prompt + response ids, plus the mode's counters (calls served
token-in, fallbacks by reason).

Usage (the server must serve the example's model as ``policy`` with Hermes tool parsing, e.g.
vLLM: ``--served-model-name policy --enable-auto-tool-choice --tool-call-parser hermes``)::

    python benchmarks/continuity_merge_rate.py --upstream http://127.0.0.1:8000 --tasks 32
"""

from __future__ import annotations

import argparse
import importlib
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from fulmen.batch import build_batch, group_records
from fulmen.credit import BroadcastAssigner
from fulmen.gateway import Gateway
from fulmen.protocol import Task
from fulmen.runner import Runner
from fulmen.store import open_store
from fulmen.train.rollouts import RolloutSampling

EXAMPLES = ("examples.calculator.agent", "examples.langchain_calculator.agent")
FORCED = "forced"
"""``--examples forced``: a plain OpenAI-client tool loop whose first call forces the tool
(``tool_choice: "required"``), then answers freely after the result: tool turns on a model
that never calls tools by itself (the tiny random Qwen2 of the real-vLLM tests)."""


class _Forced:
    """The ``forced`` agent (see :data:`FORCED`)."""

    model = "policy"
    """The served model name (``--model``)."""

    @staticmethod
    def train_tasks() -> list[dict[str, Any]]:
        return [{"id": f"q{i}", "question": f"What is {i} times 4?"} for i in range(1000)]

    @staticmethod
    def reward(task: Task, output: Any, ctx: Any) -> float:
        return 0.0

    @staticmethod
    def solve(task: Task, ctx: Any) -> str | None:
        import openai

        tool = {"type": "function", "function": {"name": "calculator", "parameters": {
            "type": "object", "properties": {"expression": {"type": "string"}}}}}  # fmt: skip
        with openai.OpenAI(base_url=ctx.base_url, api_key=ctx.api_key, timeout=120, max_retries=0) as client:
            messages: list[Any] = [{"role": "user", "content": task.data["question"]}]
            first = client.chat.completions.create(model=_Forced.model, messages=messages, tools=[tool], tool_choice="required", max_tokens=120)  # type: ignore[arg-type]  # fmt: skip
            call = first.choices[0].message
            if not call.tool_calls:
                return None
            messages += [call.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call.tool_calls[0].id, "content": "12"}]  # fmt: skip
            answer = client.chat.completions.create(model=_Forced.model, messages=messages, tools=[tool], max_tokens=20)  # type: ignore[arg-type]  # fmt: skip
            return answer.choices[0].message.content


def measure(module: str, upstream: str, tasks: int, continuity: bool, temperature: float) -> dict[str, Any]:
    """One run of ``module``'s agent over its first ``tasks`` training problems."""
    agent: Any = _Forced if module == FORCED else importlib.import_module(module)
    problems = [Task(id=p["id"], data=dict(p)) for p in agent.train_tasks()[:tasks]]
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(Path(tmp) / "episodes.db")
        with Gateway(store, upstream, continuity=continuity) as gateway:
            runner = Runner(gateway, concurrency=8, reward_fn=agent.reward)
            started = time.perf_counter()
            results = runner.run(agent.solve, problems, group_prefix="bench",
                                 episode_metadata=RolloutSampling(temperature, 0, 0))  # fmt: skip
            seconds = time.perf_counter() - started
            stats = gateway.continuity_stats
            counters = {"served_token_in": stats.continued, "fallbacks": dict(stats.fallbacks)}
        records = store.records([r.episode.id for r in results])
        store.close()
    batch = build_batch(group_records(records), BroadcastAssigner(), mode="merged")
    merged, breaks = batch.stats.get("merged_calls", 0), batch.stats.get("merge_breaks", 0)
    return {
        "example": module.split(".")[1] if "." in module else module,
        "continuity": continuity,
        "episodes": len(records),
        "calls": sum(len(r.transitions) for r in records),
        "merged_calls": merged,
        "merge_breaks": breaks,
        "merge_rate": merged / (merged + breaks) if merged + breaks else None,
        "breaks_by_reason": {k: v for k, v in batch.stats.items() if k.startswith("merge_breaks_") and v},
        "mean_reward": sum(r.rewards[0].value for r in records if r.rewards) / max(len(records), 1),
        "seconds": round(seconds, 1),
        **counters,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True, help="inference server base URL")
    parser.add_argument("--tasks", type=int, default=32, help="episodes per example and mode")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--examples", default=",".join(EXAMPLES), help=f"comma-separated; or {FORCED}")
    parser.add_argument("--model", default="policy", help="served model name (the forced agent's)")
    args = parser.parse_args()
    _Forced.model = args.model
    for module in args.examples.split(","):
        for continuity in (False, True):
            print(json.dumps(measure(module, args.upstream, args.tasks, continuity, args.temperature)), flush=True)


if __name__ == "__main__":
    main()
