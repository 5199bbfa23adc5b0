"""Batch building: per-call and merged rows, break reasons, the length limit, build_batch."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import pytest
from credit_factories import call, record, simple_group
from fulmen.batch import (
    STAT_KEYS,
    BreakReason,
    build_batch,
    classify_break,
    group_records,
    limit_length,
)
from fulmen.credit import (
    BroadcastAssigner,
    CreditAssigner,
    GRPOAssigner,
    PreparedGroup,
    StepCredit,
    TransitionKey,
    TurnGRPOAssigner,
)
from fulmen.protocol import EpisodeStatus, TerminationReason
from fulmen.rows import TrainingRow

U = {"role": "user", "content": "task"}
A = {"role": "assistant", "content": "calling"}
T = {"role": "tool", "content": "result"}


def chain(eid: str, *, messages: bool = True) -> list:
    """Three lined-up calls: each prompt = previous prompt + response + observation."""
    return [
        call(eid, 0, prompt=(1, 2, 3), response=(10, 11), messages=[U] if messages else []),
        call(
            eid,
            1,
            prompt=(1, 2, 3, 10, 11, 50, 51),
            response=(12, 13),
            messages=[U, A, T] if messages else [],
        ),
        call(
            eid,
            2,
            prompt=(1, 2, 3, 10, 11, 50, 51, 12, 13, 60),
            response=(14,),
            messages=[U, A, T, A, T] if messages else [],
        ),
    ]


def test_per_call_rows_are_exact() -> None:
    rec = record(
        "e0",
        2.0,
        [
            call(
                "e0",
                0,
                prompt=(1, 2),
                response=(5, 6, 7),
                logprobs=(-0.5, -0.25, -1.0),
                policy_version=3,
            )
        ],
        policy_version=1,
    )
    batch = build_batch([[rec]], BroadcastAssigner())
    (row,) = batch.rows
    assert row == TrainingRow(
        prompt_ids=(1, 2),
        response_ids=(5, 6, 7),
        response_mask=(1, 1, 1),
        rollout_logprobs=(-0.5, -0.25, -1.0),
        advantages=(2.0, 2.0, 2.0),
        group_id="g",
        episode_id="e0",
        seqs=(0,),
        agent=None,
        policy_version=3,
        metadata={"task_id": "t", "turns": (0,), "spans": ((0, 0, 3),)},
    )
    assert batch.stats["rows"] == 1 and batch.stats["trained_tokens"] == 3


def test_per_call_marks_missing_logprobs_and_skips_empty_prompts() -> None:
    calls = [
        call("e0", 0, logprobs=None),
        call("e0", 1, logprobs=(-1.0,)),
        call("e0", 2, prompt=()),
    ]
    batch = build_batch([[record("e0", 1.0, calls)]], BroadcastAssigner())
    assert [r.seqs for r in batch.rows] == [(0,), (1,)]
    assert all(
        r.metadata["logprobs_missing"] and r.rollout_logprobs == (0.0, 0.0) for r in batch.rows
    )
    assert batch.stats["rows_logprobs_missing"] == 2
    assert batch.stats["empty_prompt_transitions"] == 1


def test_merged_row_masks_observations() -> None:
    batch = build_batch([[record("e0", 2.0, chain("e0"))]], BroadcastAssigner(), mode="merged")
    (row,) = batch.rows
    assert row.prompt_ids == (1, 2, 3)
    assert row.response_ids == (10, 11, 50, 51, 12, 13, 60, 14)
    assert row.response_mask == (1, 1, 0, 0, 1, 1, 0, 1)
    assert row.advantages == (2.0, 2.0, 0.0, 0.0, 2.0, 2.0, 0.0, 2.0)
    assert row.rollout_logprobs == pytest.approx((-0.1, -0.2, 0, 0, -0.1, -0.2, 0, -0.1))
    assert row.seqs == (0, 1, 2)
    assert row.metadata["spans"] == ((0, 0, 2), (1, 4, 6), (2, 7, 8))
    assert batch.stats["merged_calls"] == 2 and batch.stats["merge_breaks"] == 0


def test_merge_skips_over_untrainable_calls_as_observation() -> None:
    calls = chain("e0")
    calls[1] = call(
        "e0", 1, prompt=calls[1].prompt_token_ids, response=(12, 13), flags=("no_token_ids",)
    )
    batch = build_batch([[record("e0", 1.0, calls)]], BroadcastAssigner(), mode="merged")
    (row,) = batch.rows
    assert row.seqs == (0, 2)
    assert row.response_mask == (1, 1, 0, 0, 0, 0, 0, 1)


@pytest.mark.parametrize(
    ("second", "reason"),
    [
        (
            call("e0", 1, prompt=(1, 2, 3, 10, 99, 50), messages=[U, A, T]),
            BreakReason.RETOKENISATION,
        ),
        (
            call("e0", 1, prompt=(1, 9, 3, 10, 11, 50), messages=[U, A, T]),
            BreakReason.TEMPLATE_CHANGE,
        ),
        (
            call("e0", 1, prompt=(4, 5, 6), messages=[{"role": "user", "content": "summary"}]),
            BreakReason.CONTEXT_CHANGE,
        ),
        (call("e0", 1, prompt=(1, 9, 3, 10, 11, 50)), BreakReason.OTHER),
    ],
)
def test_merge_breaks_are_classified_and_counted(second: object, reason: BreakReason) -> None:
    first = call("e0", 0, prompt=(1, 2, 3), response=(10, 11), messages=[U])
    assert classify_break(first, second) is reason  # type: ignore[arg-type]
    batch = build_batch([[record("e0", 1.0, [first, second])]], BroadcastAssigner(), mode="merged")  # type: ignore[list-item]
    assert [r.seqs for r in batch.rows] == [(0,), (1,)]
    assert batch.stats[f"merge_breaks_{reason.value}"] == 1
    assert batch.stats["merge_breaks"] == 1
    assert sum(batch.stats[f"merge_breaks_{r.value}"] for r in BreakReason) == 1


def test_merged_row_spanning_turn_groups_keeps_each_key() -> None:
    group = [record("e0", 1.0, chain("e0")), record("e1", 0.0, chain("e1"))]
    batch = build_batch([group], TurnGRPOAssigner(), mode="merged")
    assert len(batch.rows) == 2
    for row in batch.rows:
        assert row.group_id == "g"
        assert row.metadata["group_keys"] == ("g#turn0", "g#turn1", "g#turn2")


def test_merged_and_per_call_keep_agents_apart() -> None:
    calls = [
        call("e0", 0, agent="a", prompt=(1,), response=(2,)),
        call("e0", 1, agent="b", prompt=(1, 2, 3), response=(4,)),
    ]
    batch = build_batch([[record("e0", 1.0, calls)]], BroadcastAssigner(), mode="merged")
    assert sorted((r.agent, r.seqs) for r in batch.rows) == [("a", (0,)), ("b", (1,))]
    assert batch.stats["merge_breaks"] == 0


def _row(prompt: int, mask: tuple[int, ...]) -> TrainingRow:
    n = len(mask)
    return TrainingRow(
        prompt_ids=tuple(range(prompt)),
        response_ids=tuple(range(n)),
        response_mask=mask,
        rollout_logprobs=(-1.0,) * n,
        advantages=(0.5,) * n,
        group_id="g",
        episode_id="e",
        seqs=(0,),
        metadata={"spans": ((0, 0, n),)},
    )


def test_limit_length_truncates_or_drops() -> None:
    counters: Counter[str] = Counter()
    row = _row(3, (1, 1, 1, 1, 1))
    assert limit_length(row, None, "truncate", counters) is row
    assert limit_length(row, 8, "truncate", counters) is row
    cut = limit_length(row, 6, "truncate", counters)
    assert cut is not None and cut.truncated
    assert (
        cut.response_ids == (0, 1, 2)
        and cut.advantages == (0.5,) * 3
        and cut.metadata["spans"] == ((0, 0, 3),)
    )
    assert limit_length(row, 6, "drop", counters) is None
    assert limit_length(row, 3, "truncate", counters) is None  # the prompt fills max_len
    assert limit_length(_row(1, (0, 0, 1)), 3, "truncate", counters) is None  # nothing trained left
    assert counters == {"overlong_truncated": 1, "overlong_dropped": 3}


def test_build_batch_applies_max_len_and_reports_every_stat() -> None:
    group = simple_group([1.0, 0.0], calls=[2, 1])
    batch = build_batch([group], GRPOAssigner(), max_len=4, overlong="truncate")
    assert set(STAT_KEYS) <= set(batch.stats)
    assert all(len(r.prompt_ids) + len(r.response_ids) <= 4 and r.truncated for r in batch.rows)
    assert batch.stats["overlong_truncated"] == 3
    dropped = build_batch([group], GRPOAssigner(), max_len=4, overlong="drop")
    assert dropped.rows == () and dropped.stats["overlong_dropped"] == 3


def test_build_batch_sums_counters_over_groups() -> None:
    groups = [
        simple_group([1.0, 1.0], group="g1"),
        [
            *simple_group([1.0, 0.0], group="g2"),
            record(
                "f",
                0.0,
                group="g2",
                status=EpisodeStatus.FAILED,
                termination=TerminationReason.CRASHED,
            ),
        ],
    ]
    batch = build_batch(groups, GRPOAssigner())
    assert batch.stats["groups"] == 2 and batch.stats["episodes"] == 5
    assert batch.stats["dropped_groups_no_signal"] == 1
    assert batch.stats["failed_episodes"] == 1 and batch.stats["failed_episodes_crashed"] == 1
    assert [r.episode_id for r in batch.rows] == ["e0", "e1"]
    assert len(batch.credits) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "packed"}, "mode: expected one of per_call, merged, got 'packed'"),
        ({"overlong": "cut"}, "overlong: expected one of truncate, drop, got 'cut'"),
        ({"max_len": 0}, "max_len: expected a positive int or None, got 0"),
    ],
)
def test_build_batch_rejects_bad_options(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_batch([simple_group([1.0, 0.0])], GRPOAssigner(), **kwargs)  # type: ignore[arg-type]


def test_group_records_groups_by_group_id_in_order() -> None:
    recs = [
        record("a", 1.0, group="g2"),
        record("b", 1.0, group="g1"),
        record("c", 1.0, group="g2"),
        record("d", 1.0, group=None),
    ]
    assert [[r.episode.id for r in g] for g in group_records(recs)] == [["a", "c"], ["b"], ["d"]]


class _TokenPosition(CreditAssigner):
    """A custom assigner with per-token advantages: token i of a call gets i."""

    def compute(
        self, group: PreparedGroup, counters: Counter[str]
    ) -> Mapping[TransitionKey, StepCredit]:
        return {
            (tr.episode.id, t.seq): StepCredit(
                advantage=0.0,
                group_key="custom",
                token_advantages=tuple(float(i) for i in range(len(t.response_token_ids))),
            )
            for tr in group.tracks
            for t in tr.transitions
        }


def test_per_token_advantages_reach_rows_in_both_modes() -> None:
    rec = record("e0", 1.0, chain("e0"))
    per_call = build_batch([[rec]], _TokenPosition())
    assert [r.advantages for r in per_call.rows] == [(0.0, 1.0), (0.0, 1.0), (0.0,)]
    merged = build_batch([[rec]], _TokenPosition(), mode="merged")
    assert merged.rows[0].advantages == (0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0)
    assert merged.rows[0].group_id == "custom"
