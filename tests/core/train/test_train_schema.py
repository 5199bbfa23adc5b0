"""The metrics schema: what the driver computes from a step's records, and the check of what a
backend's update returns."""

from __future__ import annotations

import math

import pytest
from fulmen.errors import BackendError
from fulmen.protocol import (
    Episode,
    EpisodeRecord,
    EpisodeStatus,
    Reward,
    Task,
    TerminationReason,
    Transition,
)
from fulmen.train.schema import ROLLOUT_KEYS, check_update_metrics, rollout_metrics


def _record(
    episode_id: str,
    *,
    status: EpisodeStatus = EpisodeStatus.SUCCEEDED,
    termination: TerminationReason | None = TerminationReason.COMPLETED,
    outcome: float | None = 1.0,
    attempt: int = 1,
    calls: int = 1,
    tool_calls: int = 0,
) -> EpisodeRecord:
    episode = Episode(id=episode_id, task=Task(id="t"), status=status, termination=termination, attempt=attempt)
    transitions = tuple(
        Transition(
            episode_id=episode_id, seq=i, response_token_ids=(1, 2, 3),
            tool_calls=({"id": "c", "type": "function"},) if i < tool_calls else (),
        )
        for i in range(calls)
    )
    rewards = (
        (Reward(episode_id=episode_id, value=outcome), Reward(episode_id=episode_id, value=5.0, name="format"))
        if outcome is not None else ()
    )
    return EpisodeRecord(episode=episode, transitions=transitions, rewards=rewards)


def test_rollout_metrics_of_a_step() -> None:
    records = [
        _record("a", outcome=1.0, calls=2, tool_calls=1),
        _record("b", outcome=0.0, attempt=2),
        _record("c", outcome=None),  # succeeded without an outcome reward: scores 0
        _record("d", status=EpisodeStatus.FAILED, termination=TerminationReason.UPSTREAM_ERROR, outcome=None),
        _record("e", status=EpisodeStatus.TIMED_OUT, termination=TerminationReason.TIMEOUT, outcome=None, attempt=2),
    ]
    stats = {"no_signal_groups": 1, "dropped_groups_no_signal": 1, "merge_breaks_retokenisation": 2,
             "merge_breaks_other": 1, "merge_breaks": 9}
    row = rollout_metrics(records, stats)
    assert list(row) == list(ROLLOUT_KEYS)
    assert row["reward_mean"] == pytest.approx(1 / 3)  # named rewards are not the outcome
    assert row["reward_std"] == pytest.approx(math.sqrt(2 / 9))
    assert row["success_rate"] == pytest.approx(1 / 5)  # failed slots count as misses
    assert (row["episodes"], row["failed_episodes"], row["retried_episodes"], row["timeouts"]) == (5, 2, 2, 1)
    assert row["infra_failed_episodes"] == 1  # the upstream error; a timeout is not infrastructure
    assert (row["llm_calls"], row["response_tokens"], row["tool_call_rate"]) == (6, 18, pytest.approx(1 / 6))
    assert (row["no_signal_groups"], row["dropped_groups"], row["drift_breaks"]) == (1, 1, 3)


def test_no_signal_groups_of_assigners_that_only_count_what_they_drop() -> None:
    row = rollout_metrics([_record("a")], {"dropped_groups_no_signal": 3})
    assert (row["no_signal_groups"], row["dropped_groups"]) == (3, 3)
    empty = rollout_metrics([], {})
    assert (empty["episodes"], empty["reward_mean"], empty["success_rate"]) == (0, 0.0, 0.0)


def test_an_update_is_checked_against_the_schema() -> None:
    ok = {"loss": 1, "grad_norm": 0.5, "num_tokens": 10, "entropy": 0.7, "mine/extra": 2.0}
    assert check_update_metrics(ok) == {k: float(v) for k, v in ok.items()}
    with pytest.raises(BackendError, match="returned no grad_norm, num_tokens"):
        check_update_metrics({"loss": 1.0})
    with pytest.raises(BackendError, match="'actor_entropy'.*namespace"):
        check_update_metrics({**ok, "actor_entropy": 0.1})
    with pytest.raises(BackendError, match="'batch/rows'"):
        check_update_metrics({**ok, "batch/rows": 3})
    for bad in (float("nan"), float("inf"), True, "1.0"):
        with pytest.raises(BackendError, match="loss = .*not a finite number"):
            check_update_metrics({**ok, "loss": bad})
