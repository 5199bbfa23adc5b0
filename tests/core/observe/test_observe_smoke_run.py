"""Observability on a real training run: ``fulmen train`` on the calculator smoke config with a
reward that never varies logs the no-variance alarm each step, and ``fulmen watch`` /
``check_metrics`` / ``fulmen export-otel`` read the run directory it wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from _otlp_receiver import OtlpReceiver, by_episode
from fulmen.observe.alarms import check_metrics
from fulmen.observe.feed import MetricsTail
from fulmen.store.sqlite import SQLiteStore

REPO = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A finished smoke run (output directory, training log) whose reward is always 0."""
    tmp = tmp_path_factory.mktemp("observe-smoke")
    (tmp / "flat_reward.py").write_text("def reward(task, output, ctx):\n    return 0.0\n")
    raw = tomllib.loads((REPO / "examples" / "calculator" / "smoke.toml").read_text())
    raw["run"]["output_dir"] = str(tmp / "run")
    raw["model"]["path"] = str(tmp / "base")
    raw["agent"]["reward"] = "flat_reward:reward"
    lines = [f"{k} = {json.dumps(v)}" for k, v in raw.items() if not isinstance(v, dict)]
    for section, table in raw.items():
        if isinstance(table, dict):
            lines += [f"[{section}]", *(f"{k} = {json.dumps(v)}" for k, v in table.items())]
    config = tmp / "smoke.toml"
    config.write_text("\n".join(lines) + "\n")
    done = subprocess.run(
        [sys.executable, "-m", "fulmen.cli", "train", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=540,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(tmp)])},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return tmp / "run", done.stdout + done.stderr


def test_the_training_loop_logs_the_alarm_once_per_step(smoke: tuple[Path, str]) -> None:
    _, log = smoke
    for step in (1, 2):
        assert log.count(f"step {step}: no_reward_variance alarm (critical)") == 1
    assert "Look at: the reward function" in log


def test_check_metrics_on_the_real_run_directory(smoke: tuple[Path, str]) -> None:
    run, _ = smoke
    rows = MetricsTail(run / "metrics.jsonl").poll()
    assert [r["step"] for r in rows if r["kind"] == "train"] == [1, 2]
    alarms = check_metrics(rows)
    # The 5-step smoke base also drops special tokens from its content, which the drift
    # check rightly reports (prompt_drift); no other alarm may fire.
    assert {a.kind for a in alarms} <= {"no_reward_variance", "prompt_drift"}
    [alarm] = [a for a in alarms if a.kind == "no_reward_variance"]
    assert (alarm.kind, alarm.severity, alarm.step) == ("no_reward_variance", "critical", 2)
    assert "4 of 4 groups" in alarm.message


def test_watch_once_on_the_real_run(smoke: tuple[Path, str]) -> None:
    run, _ = smoke
    with SQLiteStore(run / "episodes.db") as store:
        finished = store.finished_episodes()
    done = subprocess.run(
        [sys.executable, "-m", "fulmen.cli", "watch", str(run), "--once"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert f"{len(finished)} finished · 0 running" in done.stdout
    assert finished[-1].id in done.stdout and "step 2" in done.stdout
    assert "CRITICAL no_reward_variance step 2" in done.stdout


def test_export_otel_of_the_real_run(smoke: tuple[Path, str]) -> None:
    run, _ = smoke
    with SQLiteStore(run / "episodes.db") as store:
        records = store.records([e.id for e in store.finished_episodes()])
    with OtlpReceiver() as receiver:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "fulmen.cli",
                "export-otel",
                "--store",
                str(run / "episodes.db"),
                "--endpoint",
                receiver.url,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr
    trees = by_episode(receiver.spans)
    assert sorted(trees) == sorted(r.episode.id for r in records)
    for record in records:
        chats = [s for s in trees[record.episode.id][1:] if s.name.startswith("chat ")]
        assert len(chats) == len(record.transitions)


def test_dashboard_data_of_the_real_run(smoke: tuple[Path, str]) -> None:
    """The dashboard's endpoints on the real run: counts, curves, the evaluations to compare,
    and token text decoded by the run's own tokenizer (the newest checkpoint's)."""
    from fulmen.observe.dashboard import DashboardData, TokenText, find_tokenizer
    from tokenizers import Tokenizer

    run, _ = smoke
    path = find_tokenizer(run)
    assert path is not None and path.parent.name == "step-000002"
    data = DashboardData(store_path=run / "episodes.db", run_dir=run, tokens=TokenText(path))
    try:
        with SQLiteStore(run / "episodes.db") as store:
            finished = store.finished_episodes()
            step1 = store.list_episodes(group_id=next(e.group_id for e in finished if e.group_id))
        summary = data.summary()
        assert (summary["finished"], summary["step"]) == (len(finished), 2)
        curves = {s["metric"]: s for c in data.curves()["charts"] for s in c["series"]}
        assert curves["reward"]["x"] == [1, 2] and curves["eval:success_rate"]["x"] == [0, 1, 2]
        options = data.compare_options()
        assert options["versions"] == [0, 1, 2] and len(options["tasks"]) == 8
        detail = data.episode(step1[0].id)
        [call] = detail["calls"]
        assert call["skip_reason"] == "no_signal"  # the flat reward: every group dropped
        ids = call["tokens"]["response"]["ids"]
        decoded = Tokenizer.from_file(str(path)).decode(ids, skip_special_tokens=False)
        assert "".join(call["tokens"]["response"]["text"]) == decoded
        assert len(call["tokens"]["response"]["logprobs"]) == len(ids) > 0
        # the replayed credit agrees with what the loop counted when it built each step's batch
        rows = [r for r in MetricsTail(run / "metrics.jsonl").poll() if r["kind"] == "train"]
        for row in rows:
            fates: dict[str, int] = {}
            for e in finished:
                if (e.group_id or "").startswith(f"step{row['step']}:"):
                    for c in data.episode(e.id)["calls"]:
                        fates[c["skip_reason"] or "trains"] = fates.get(c["skip_reason"] or "trains", 0) + 1
            assert fates == {"no_signal": row["batch/dropped_transitions_no_signal"]}
    finally:
        data.close()
