"""Per-call overhead of each framework adapter: the same agent with and without it.

For every adapter, the agent is the conformance kit's sample agent of that adapter's tests
(``packages/*/tests``: the real framework, one tool, two or three LLM calls per episode),
running through the real runner and gateway against the vLLM wire-format test double (which
stands in for vLLM and answers at once, so framework and adapter costs are not hidden behind
generation time). Rounds alternate *bare* (adapter detached) and *adapter* (attached); each
round runs ``--episodes`` episodes one at a time. Reported: wall time per LLM call (median of
the rounds), the added microseconds per call and the ratio adapter / bare, measured in the
same process and run.

Run: ``uv run --locked python benchmarks/adapter_overhead.py --episodes 20 --rounds 5``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fulmen_testkit import KitStack, kit_task

# DSPy (through LiteLLM) fetches a model-price map from GitHub on first use: use its bundled copy.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "true")

REPO = Path(__file__).resolve().parents[1]

KITS: dict[str, tuple[str, str, str]] = {
    "langchain": ("langchain-adapter", "test_conformance", "TestLangChainConformance"),
    "openai-agents": (
        "openai-adapter",
        "test_openai_agents_conformance",
        "TestAgentsSDKConformance",
    ),
    "openai": ("openai-adapter", "test_openai_client_conformance", "TestOpenAIClientConformance"),
    "autogen": ("autogen-adapter", "test_autogen_conformance", "TestAutoGenConformance"),
    "dspy": ("dspy-adapter", "test_dspy_conformance", "TestDSPyConformance"),
}
"""Framework → (package folder, conformance test module, kit subclass)."""


def load_kit(name: str) -> Any:
    """An instance of the adapter's kit subclass (its sample agent and adapter factory)."""
    folder, module, cls = KITS[name]
    tests = str(REPO / "packages" / folder / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    return getattr(importlib.import_module(module), cls)()


def per_call_seconds(stack: KitStack, agent: Any, episodes: int, offset: int) -> float:
    """Wall seconds per LLM call over ``episodes`` sequential episodes."""
    tasks = [kit_task(offset + i) for i in range(episodes)]
    start = time.perf_counter()
    results = stack.run(agent, tasks, concurrency=1)
    elapsed = time.perf_counter() - start
    calls = sum(stack.requests_of(r.episode.id) for r in results)
    failed = [r.episode.error for r in results if not r.ok]
    if failed:
        raise RuntimeError(f"episodes failed: {failed[:2]}")
    return elapsed / max(calls, 1)


def measure(name: str, episodes: int, rounds: int) -> dict[str, float]:
    """Bare and adapter seconds per call (medians) for one framework."""
    kit = load_kit(name)
    agent = kit.make_agent()
    adapter = kit.new_adapter()
    times: dict[str, list[float]] = {"bare": [], "adapter": []}
    with (
        tempfile.TemporaryDirectory() as tmp,
        KitStack(Path(tmp), responder=kit.make_responder()) as stack,
    ):
        per_call_seconds(stack, agent, 2, 10_000)  # warm-up: imports, connections
        offset = 0
        for _ in range(rounds):
            for mode in ("bare", "adapter"):
                if mode == "adapter":
                    adapter.attach()
                try:
                    times[mode].append(per_call_seconds(stack, agent, episodes, offset))
                finally:
                    adapter.detach()
                offset += episodes
    return {mode: statistics.median(values) for mode, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=20, help="episodes per round and mode")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (medians)")
    parser.add_argument("--only", nargs="*", choices=sorted(KITS), help="frameworks to measure")
    args = parser.parse_args()
    print("| adapter | bare ms/call | with adapter ms/call | added µs/call | adapter / bare |")
    print("|---|---|---|---|---|")
    for name in args.only or list(KITS):
        m = measure(name, args.episodes, args.rounds)
        added_us = (m["adapter"] - m["bare"]) * 1e6
        print(
            f"| {name} | {m['bare'] * 1e3:.2f} | {m['adapter'] * 1e3:.2f} | {added_us:+.0f} | "
            f"{m['adapter'] / m['bare']:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
