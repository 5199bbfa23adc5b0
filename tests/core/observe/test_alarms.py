"""Alarms on synthetic metrics rows and episodes: each fires where it should, with the numbers,
stays quiet on a healthy run, follows its thresholds, and is logged once per step."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from _observe_data import add_failed_episode, add_tool_episode, train_row
from fulmen.config import ConfigError, parse_config
from fulmen.observe.alarms import (
    AlarmMonitor,
    AlarmThresholds,
    check_episodes,
    check_metrics,
    merge_alarms,
    parse_threshold,
)
from fulmen.protocol import TerminationReason
from fulmen.store.sqlite import SQLiteStore


def _kinds(rows: list[dict[str, object]], th: AlarmThresholds | None = None) -> dict[str, str]:
    return {a.kind: a.severity for a in check_metrics(rows, th)}


def test_a_healthy_run_raises_nothing() -> None:
    rows = [
        train_row(s, entropy=0.8 - 0.02 * s, tool_call_rate=0.4 + 0.01 * s) for s in range(1, 9)
    ]
    assert check_metrics(rows) == []
    assert check_metrics([]) == []


def test_entropy_collapse_relative_to_the_first_steps_then_below_the_floor() -> None:
    rows = [train_row(1, entropy=0.9), train_row(2, entropy=1.0), train_row(3, entropy=0.7)]
    assert _kinds(rows) == {}  # still the baseline window
    rows.append(train_row(4, entropy=0.25))
    assert _kinds(rows) == {}  # 25% of the 1.0 baseline: above the 20% ratio
    rows.append(train_row(5, entropy=0.15))
    [alarm] = check_metrics(rows)
    assert (alarm.kind, alarm.severity, alarm.step) == ("entropy_collapse", "warning", 5)
    assert alarm.value == pytest.approx(0.15) and alarm.threshold == pytest.approx(0.2)
    assert "1.0000" in alarm.message and "temperature" in alarm.what_to_look_at
    rows.append(train_row(6, entropy=0.005))
    assert _kinds(rows) == {"entropy_collapse": "critical"}


def test_rows_without_kind_are_train_rows_and_eval_rows_are_ignored() -> None:
    rows: list[dict[str, object]] = [{"step": s, "entropy": 1.0} for s in (1, 2, 3)]
    rows.append({"kind": "eval", "step": 3, "success_rate": 0.0})
    rows.append({"step": 4, "entropy": 0.1})
    assert _kinds(rows) == {"entropy_collapse": "warning"}


def test_only_the_schema_names_are_read() -> None:
    # a backend's own names (verl's actor/entropy, the batch's dropped counter) are mapped to
    # the schema by the backend and the driver; the alarms never translate them back
    rows: list[dict[str, object]] = [{"step": s, "actor/entropy": 1.0} for s in (1, 2, 3)]
    rows.append({"step": 4, "actor/entropy": 0.1})
    assert _kinds(rows) == {}
    flat = {"step": 1, "batch/groups": 8.0, "batch/dropped_groups_no_signal": 7.0}
    assert _kinds([flat]) == {}
    assert _kinds([{**flat, "no_signal_groups": 7.0}]) == {"no_reward_variance": "warning"}


def test_tool_calls_vanishing_only_for_agents_that_used_tools() -> None:
    rows = [train_row(1, tool_call_rate=0.5), train_row(2, tool_call_rate=0.3)]
    assert _kinds(rows) == {}
    rows.append(train_row(3, tool_call_rate=0.1))
    [alarm] = check_metrics(rows)
    assert (alarm.kind, alarm.severity) == ("tool_calls_vanishing", "warning")
    assert "50.0%" in alarm.message and "10.0%" in alarm.message
    rows.append(train_row(4, tool_call_rate=0.0))
    assert _kinds(rows) == {"tool_calls_vanishing": "critical"}
    never = [train_row(s, tool_call_rate=0.01 if s == 1 else 0.0) for s in (1, 2, 3)]
    assert _kinds(never) == {}  # peak 1% < tool_rate_min_peak: an agent without tools


def test_no_reward_variance_counts_groups_without_signal() -> None:
    assert _kinds([train_row(1, no_signal_groups=3)]) == {}  # 75% is not "more than"
    assert _kinds([train_row(1, no_signal_groups=4, **{"batch/groups": 5})]) == {
        "no_reward_variance": "warning"
    }
    [alarm] = check_metrics([train_row(2, no_signal_groups=4)])
    assert (alarm.severity, alarm.step, alarm.value) == ("critical", 2, 1.0)
    assert "4 of 4 groups" in alarm.message
    # counters written as floats count the same
    assert _kinds([{"step": 1, "batch/groups": 8.0, "no_signal_groups": 7.0}]) == {
        "no_reward_variance": "warning"
    }


def _drift(step: int, drift: int, merged: int = 100) -> dict[str, object]:
    return train_row(
        step,
        **{
            "batch/merged_calls": merged,
            "batch/merge_breaks": drift + 5,
            "batch/merge_breaks_context_change": 5,  # a changed conversation is not drift
            "batch/merge_breaks_retokenisation": drift,
        },
    )


def test_drift_breaks_rate_and_a_rise_over_the_last_steps() -> None:
    assert _kinds([_drift(1, 2)]) == {}  # 2 / 107 < 5%
    assert _kinds([_drift(1, 0, merged=0) | {"batch/merge_breaks": 0}]) == {}  # per-call mode
    assert _kinds([_drift(1, 2), _drift(2, 9)]) == {"drift_breaks_rising": "warning"}
    rising = [_drift(s, d) for s, d in enumerate((1, 6, 9, 14), start=1)]
    [alarm] = check_metrics(rising)
    assert (alarm.kind, alarm.severity) == ("drift_breaks_rising", "critical")
    assert "rising over the last 3 steps" in alarm.message
    assert "retokenisation" in alarm.what_to_look_at


def test_infra_failures_from_the_step_row() -> None:
    assert _kinds([train_row(1, infra_failed_episodes=1)]) == {}
    assert _kinds([train_row(1, infra_failed_episodes=3)]) == {"infra_failures": "warning"}
    assert _kinds([train_row(1, infra_failed_episodes=8)]) == {"infra_failures": "critical"}
    small = train_row(1, infra_failed_episodes=3, episodes=4)
    assert _kinds([small]) == {}  # fewer than min_episodes


def test_infra_failures_from_real_store_episodes(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "episodes.db") as store:
        for i in range(7):
            add_tool_episode(store, f"ok-{i}")
        add_failed_episode(store, "agent-bug", TerminationReason.AGENT_ERROR)
        add_failed_episode(store, "timeout", TerminationReason.TIMEOUT)
        assert check_episodes(store.list_episodes()) == []  # policy failures are not infra
        add_failed_episode(store, "down-1")
        add_failed_episode(store, "down-2", TerminationReason.CRASHED)
        [alarm] = check_episodes(store.list_episodes())
    assert (alarm.kind, alarm.severity, alarm.step) == ("infra_failures", "warning", None)
    assert (
        "2 of 11 recent episodes" in alarm.message and "inference server" in alarm.what_to_look_at
    )


def test_thresholds_change_what_fires() -> None:
    rows = [train_row(1, no_signal_groups=2)]
    assert _kinds(rows) == {}
    loose = parse_threshold("no_signal_group_fraction=0.25")
    assert _kinds(rows, loose) == {"no_reward_variance": "warning"}
    assert parse_threshold("min_episodes=3", loose).min_episodes == 3
    for bad in ("nope=1", "entropy_floor", "entropy_floor=abc", "entropy_floor=-1"):
        with pytest.raises(ValueError, match="threshold"):
            parse_threshold(bad)


def test_the_alarms_table_of_the_training_config() -> None:
    base = {"agent": {"entry": "a:b"}, "data": {"train": "a:b"}, "model": {"path": "m"}}
    config = parse_config({**base, "alarms": {"entropy_floor": 0.05, "min_episodes": 4}})
    assert config.alarms == AlarmThresholds(entropy_floor=0.05, min_episodes=4)
    assert parse_config(base).alarms == AlarmThresholds()
    with pytest.raises(
        ConfigError, match=r"\[alarms\].*entropy_flor.*Did you mean 'entropy_floor'"
    ):
        parse_config({**base, "alarms": {"entropy_flor": 0.05}})
    with pytest.raises(ConfigError, match=r"\[alarms\].*infra_failure_rate.*>= 0"):
        parse_config({**base, "alarms": {"infra_failure_rate": -0.5}})


def test_merge_keeps_one_alarm_per_kind_the_critical_one() -> None:
    warn = check_metrics([train_row(1, infra_failed_episodes=3)])
    crit = check_metrics([train_row(1, infra_failed_episodes=9)])
    assert [a.severity for a in merge_alarms(warn, crit)] == ["critical"]
    assert [a.severity for a in merge_alarms(crit, warn)] == ["critical"]


def test_the_monitor_logs_each_alarm_once_per_step(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="fulmen.alarms")
    monitor = AlarmMonitor(history=[train_row(1)])
    assert monitor.observe({"kind": "eval", "step": 2, "success_rate": 0.0}) == []
    flat = train_row(2, no_signal_groups=4)
    assert [a.kind for a in monitor.observe(flat)] == ["no_reward_variance"]
    monitor.observe(flat)  # the same step again: not logged twice
    monitor.observe(train_row(3, no_signal_groups=4))
    records = [r for r in caplog.records if r.name == "fulmen.alarms"]
    assert [r.levelno for r in records] == [logging.WARNING] * 2
    assert records[0].getMessage().startswith("step 2: no_reward_variance alarm (critical)")
    assert "Look at: the reward function" in records[0].getMessage()
    assert records[1].getMessage().startswith("step 3:")
