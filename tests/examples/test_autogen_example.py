"""The AutoGen calculator example trains end to end: ``fulmen train`` on its smoke config.

Run in a subprocess, as a user runs it: the example attaches the AutoGen adapter when it is
imported, which must not leak into this test process.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _smoke import run_smoke

AGENT_NAME = "calculator_agent"


@pytest.mark.slow
def test_autogen_smoke_config_trains_and_records_autogen_structure(tmp_path: Path) -> None:
    run = run_smoke("autogen_calculator", tmp_path)
    assert [r["step"] for r in run.train] == [1, 2]
    # The smoke model is barely warm-started: groups may all score 0 (no update), as in
    # examples/calculator's smoke run; what matters here is that every episode ran.
    assert all(r["episodes"] > 0 and r["failed_episodes"] == 0 for r in run.train)
    assert all(r["llm_calls"] >= r["episodes"] for r in run.train)
    assert run.evals
    transitions = run.transitions
    assert transitions
    assert all(t.metadata.get("framework") == "autogen" for t in transitions)
    assert {t.agent for t in transitions} == {AGENT_NAME}
    # every call that asked for tools carries their results, joined by tool call id
    asked = [t for t in transitions if t.tool_calls]
    for t in asked:
        joined = {item["tool_call_id"] for item in t.metadata.get("tool_results", ())}
        assert joined == {call["id"] for call in t.tool_calls}, t.request_id
    assert all(not t.metadata.get("tool_results") for t in transitions if not t.tool_calls)
