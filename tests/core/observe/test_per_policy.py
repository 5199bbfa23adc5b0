"""Per-policy views of a run with ``[[policy]]``: ``fulmen watch``'s policies table, the
dashboard's policies, per-policy charts and the policy and version of every call, from a run
written by a real gateway with policy routes (:mod:`_policy_run`). A run without ``[[policy]]``
shows none of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _observe_data import add_tool_episode, train_row, write_metrics
from _policy_run import VERSIONS, PolicyRun, make_policy_run
from fulmen.observe.dashboard import Dashboard, DashboardData
from fulmen.observe.dashboard.curves import CHARTS, curves_json
from fulmen.observe.per_policy import policy_names, policy_views
from fulmen.observe.summary import BASE_POLICY, summarize
from fulmen.store.sqlite import SQLiteStore

ENV = {**os.environ, "COLUMNS": "220", "NO_COLOR": "1"}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> PolicyRun:
    return make_policy_run(tmp_path_factory.mktemp("policy-run"))


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def url(run: PolicyRun) -> Iterator[str]:
    dashboard = Dashboard(
        DashboardData(store_path=run.store_path, run_dir=run.run_dir, min_refresh_s=0.0), port=0
    )
    dashboard.start_in_thread()
    try:
        yield dashboard.url
    finally:
        dashboard.stop_thread()


def test_views_join_the_metrics_and_the_recorded_calls(run: PolicyRun) -> None:
    with SQLiteStore(run.store_path) as store:
        summaries = [summarize(store.record(f"ep-p{k}")) for k in range(len(VERSIONS))]
    assert summaries[0].policy_of_agent == {"planner": "planner", "solver": "solver", "critic": BASE_POLICY}
    views = {v.name: v for v in policy_views(run.rows, summaries)}
    assert list(views) == ["planner", "solver", BASE_POLICY]
    planner, solver, base = views["planner"], views["solver"], views[BASE_POLICY]
    assert (planner.agents, planner.version, planner.calls) == (("planner",), max(VERSIONS), 3)
    assert (solver.agents, base.agents) == (("solver",), ("critic",))
    assert planner.step == 2
    # the current step: the solver was updated, the planner was not (no update keys)
    assert solver.metrics["loss"] == 0.5 and solver.metrics["rows"] == 3.0
    assert planner.metrics["loss"] is None and planner.metrics["llm_calls"] == 3.0
    assert base.metrics["llm_calls"] == 3.0  # policies/base_llm_calls
    # a run without [[policy]]: no policy anywhere
    assert policy_names([train_row(1)]) == []


def test_watch_shows_a_row_per_policy(run: PolicyRun) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fulmen.cli", "watch", str(run.run_dir), "--once"],
        capture_output=True, text=True, timeout=60, env=ENV,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "policies (step 2" in done.stdout
    rows = {
        cells[1].strip(): [c.strip() for c in cells[2:-1]]
        for ln in done.stdout.splitlines()
        if len(cells := ln.split("│")) == 13
    }
    # agents, version, step calls, rows, response tokens, loss, kl, entropy, clip, grad norm
    assert rows["planner"][:5] == ["planner", "v2", "3", "0", rows["planner"][4]]
    assert rows["planner"][5:] == ["-", "-", "-", "-", "-"]
    assert rows["solver"][:4] == ["solver", "v2", "3", "3"]
    assert rows["solver"][5:] == ["0.5", "0.02", "-", "-", "0.5"]
    assert rows[BASE_POLICY][:3] == ["critic", "v2", "3"]


def test_watch_without_policies_looks_as_before(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with SQLiteStore(plain / "episodes.db") as store:
        add_tool_episode(store, "ep-0")
    write_metrics(plain / "metrics.jsonl", [train_row(1)])
    done = subprocess.run(
        [sys.executable, "-m", "fulmen.cli", "watch", str(plain), "--once"],
        capture_output=True, text=True, timeout=60, env=ENV,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "agents (last 1 episodes)" in done.stdout and "policies (step" not in done.stdout


def test_dashboard_summary_and_curves_per_policy(url: str, run: PolicyRun) -> None:
    summary = _get(url + "/api/summary")
    policies = {p["name"]: p for p in summary["policies"]}
    assert list(policies) == ["planner", "solver", BASE_POLICY]
    assert policies["solver"]["version"] == max(VERSIONS)
    assert policies["solver"]["metrics"]["loss"] == 0.5
    charts = {c["id"]: c for c in _get(url + "/api/curves")["charts"]}
    loss = charts["policy-loss"]["series"]
    assert [(s["label"], s["x"], s["y"]) for s in loss] == [
        ("planner", [1], [-0.125]),  # updated at step 1 only
        ("solver", [1, 2], [0.25, 0.5]),
    ]
    assert [s["label"] for s in charts["policy-rows"]["series"]] == ["planner", "solver"]


def test_dashboard_without_policies_has_no_policy_chart() -> None:
    charts = curves_json([train_row(1), train_row(2)], [])["charts"]
    assert [c["id"] for c in charts] == [c.id for c in CHARTS]


def test_every_call_names_its_policy_and_version(url: str) -> None:
    for k, version in enumerate(VERSIONS):
        calls = _get(f"{url}/api/episodes/ep-p{k}")["calls"]
        assert [(c["agent"], c["policy"], c["policy_version"]) for c in calls] == [
            ("planner", "planner", version),
            ("solver", "solver", version),
            ("critic", BASE_POLICY, version),
        ]


def test_show_names_the_policy_and_version_of_every_call(run: PolicyRun) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fulmen.cli", "show", "ep-p2", "--store", str(run.store_path)],
        capture_output=True, text=True, timeout=60, env=ENV,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    heads = [ln for ln in done.stdout.splitlines() if "transition " in ln]
    assert ["policy planner v2" in heads[0], "policy solver v2" in heads[1]] == [True, True]
    assert "policy (base) v2" in heads[2]
