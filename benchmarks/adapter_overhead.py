"""Per-call overhead of each framework adapter: the same agent with and without it.

For every adapter, the agent is the conformance kit's sample agent of that adapter's tests
(``packages/*/tests``: the real framework, one tool, two or three LLM calls per episode),
running through the real runner and gateway against the vLLM wire-format test double (which
stands in for vLLM and answers at once, so framework and adapter costs are not hidden behind
generation time). Episodes run one at a time, alternating *bare* (adapter detached) and
*adapter* (attached). Reported per LLM call, medians over the episodes: wall time and CPU time
of this process (agent, framework, adapter, gateway and double all run in it), the added
microseconds and the CPU ratio adapter / bare, measured in the same process and run.

Run: ``uv run --locked python benchmarks/adapter_overhead.py --episodes 100``.
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


def one_episode(stack: KitStack, agent: Any, index: int) -> tuple[float, float]:
    """Wall and CPU seconds (this process: agent, framework, adapter, gateway, double) per LLM
    call of one episode."""
    wall, cpu = time.perf_counter(), time.process_time()
    (result,) = stack.run(agent, [kit_task(index)], concurrency=1)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if not result.ok:
        raise RuntimeError(f"episode failed: {result.episode.error}")
    calls = max(stack.requests_of(result.episode.id), 1)
    return wall / calls, cpu / calls


def measure(name: str, episodes: int) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) seconds per call, bare and with the adapter, for one framework.

    Episodes alternate bare / adapter one by one, so slow drifts of the machine hit both."""
    kit = load_kit(name)
    agent = kit.make_agent()
    adapter = kit.new_adapter()
    samples: dict[str, list[tuple[float, float]]] = {"bare": [], "adapter": []}
    with tempfile.TemporaryDirectory() as tmp, KitStack(
        Path(tmp), responder=kit.make_responder()
    ) as stack:
        for i in range(3):  # warm-up: imports, connections, caches
            one_episode(stack, agent, 10_000 + i)
        for i in range(episodes):
            for mode in ("bare", "adapter"):
                if mode == "adapter":
                    adapter.attach()
                try:
                    samples[mode].append(one_episode(stack, agent, 2 * i + (mode == "adapter")))
                finally:
                    adapter.detach()
    return {
        mode: (statistics.median(w for w, _ in values), statistics.median(c for _, c in values))
        for mode, values in samples.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=100, help="episodes per mode")
    parser.add_argument("--only", nargs="*", choices=sorted(KITS), help="frameworks to measure")
    args = parser.parse_args()
    print(
        "| adapter | bare wall ms/call | adapter wall ms/call | added wall µs/call "
        "| bare CPU ms/call | adapter CPU ms/call | added CPU µs/call | CPU adapter / bare |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in args.only or list(KITS):
        m = measure(name, args.episodes)
        (bw, bc), (aw, ac) = m["bare"], m["adapter"]
        print(
            f"| {name} | {bw * 1e3:.2f} | {aw * 1e3:.2f} | {(aw - bw) * 1e6:+.0f} | "
            f"{bc * 1e3:.2f} | {ac * 1e3:.2f} | {(ac - bc) * 1e6:+.0f} | {ac / bc:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
