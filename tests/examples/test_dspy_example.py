"""The DSPy calculator example trains end to end: ``fulmen train`` on its smoke config.

Run in a subprocess, as a user runs it: the example attaches the DSPy adapter when it is
imported, which must not leak into this test process.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _smoke import run_smoke


@pytest.mark.slow
def test_dspy_smoke_config_trains_and_records_dspy_structure(tmp_path: Path) -> None:
    run = run_smoke("dspy_calculator", tmp_path)
    assert [r["step"] for r in run.train] == [1, 2]
    # The smoke model is barely warm-started: groups may all score 0 (no update), as in
    # examples/calculator's smoke run; what matters here is that every episode ran.
    assert all(r["episodes"] > 0 and r["failed_episodes"] == 0 for r in run.train)
    assert all(r["llm_calls"] >= r["episodes"] for r in run.train)
    assert run.evals
    transitions = run.transitions
    assert transitions
    assert all(t.metadata.get("framework") == "dspy" for t in transitions)
    assert {t.agent for t in transitions} == {"CalculatorAgent"}
    assert {t.metadata.get("node") for t in transitions} == {"CalculatorAgent"}
    results = [item for t in transitions for item in t.metadata.get("tool_results", ())]
    assert all(item["name"] == "calculator" for item in results)
