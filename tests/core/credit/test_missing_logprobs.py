"""Rows whose rollout logprobs are unknown carry a per-token mask (``missing_logprobs``), in
per-call and merged mode and through truncation, so no trainer takes the 0.0 placeholder for a
logprob."""

from __future__ import annotations

import math

import pytest
from credit_factories import call, record
from fulmen.batch import build_batch
from fulmen.credit import BroadcastAssigner
from fulmen.rows import TrainingRow


def test_per_call_rows_flag_every_unknown_token() -> None:
    calls = [
        call("e0", 0, response=(7, 8), logprobs=None),  # none returned
        call("e0", 1, response=(7, 8), logprobs=(-1.0,)),  # not one per token
        call("e0", 2, response=(7, 8, 9), logprobs=(-0.5, math.nan, -math.inf)),  # non-finite
        call("e0", 3, response=(7, 8), logprobs=(-0.5, -0.25)),
    ]
    batch = build_batch([[record("e0", 1.0, calls)]], BroadcastAssigner())
    rows = {r.seqs[0]: r for r in batch.rows}
    assert rows[0].missing_logprobs == (1, 1)
    assert rows[1].missing_logprobs == (1, 1)
    assert rows[2].missing_logprobs == (0, 1, 1)
    assert rows[2].rollout_logprobs == (-0.5, 0.0, 0.0)  # finite placeholders, flagged
    assert rows[3].missing_logprobs == () and not rows[3].logprobs_missing
    assert [rows[k].logprobs_missing for k in range(4)] == [True, True, True, False]
    assert [bool(rows[k].metadata.get("logprobs_missing")) for k in range(4)] == [
        True,
        True,
        True,
        False,
    ]
    assert batch.stats["rows_logprobs_missing"] == 3
    assert batch.stats["missing_logprob_tokens"] == 6


def test_merged_rows_flag_only_the_unknown_call_and_never_observations() -> None:
    calls = [
        call("e0", 0, prompt=(1, 2), response=(3, 4), logprobs=(-0.1, -0.2)),
        call("e0", 1, prompt=(1, 2, 3, 4, 5, 6), response=(7,), logprobs=None),
        call("e0", 2, prompt=(1, 2, 3, 4, 5, 6, 7, 8), response=(9, 10), logprobs=(-0.3, -0.4)),
    ]
    batch = build_batch([[record("e0", 1.0, calls)]], BroadcastAssigner(), mode="merged")
    (row,) = batch.rows
    assert row.response_ids == (3, 4, 5, 6, 7, 8, 9, 10)
    assert row.response_mask == (1, 1, 0, 0, 1, 0, 1, 1)
    assert row.missing_logprobs == (0, 0, 0, 0, 1, 0, 0, 0)
    assert row.rollout_logprobs == pytest.approx((-0.1, -0.2, 0, 0, 0, 0, -0.3, -0.4))
    assert batch.stats["rows_logprobs_missing"] == 1
    assert batch.stats["missing_logprob_tokens"] == 1


def test_truncation_keeps_the_mask_aligned() -> None:
    calls = [
        call("e0", 0, prompt=(1, 2), response=(3, 4), logprobs=(-0.1, -0.2)),
        call("e0", 1, prompt=(1, 2, 3, 4, 5), response=(6, 7), logprobs=None),
    ]
    group = [[record("e0", 1.0, calls)]]
    cut = build_batch(group, BroadcastAssigner(), mode="merged", max_len=6).rows[0]
    assert cut.response_ids == (3, 4, 5, 6)
    assert cut.missing_logprobs == (0, 0, 0, 1)
    clean = build_batch(group, BroadcastAssigner(), mode="merged", max_len=4).rows[0]
    assert clean.response_ids == (3, 4)
    assert clean.missing_logprobs == () and "logprobs_missing" not in clean.metadata


def test_a_row_refuses_a_mask_of_the_wrong_length() -> None:
    with pytest.raises(ValueError, match=r"TrainingRow.missing_logprobs: expected 2 entries"):
        TrainingRow(
            prompt_ids=(1,),
            response_ids=(2, 3),
            response_mask=(1, 1),
            rollout_logprobs=(0.0, 0.0),
            advantages=(1.0, 1.0),
            group_id="g",
            episode_id="e",
            seqs=(0,),
            missing_logprobs=(1,),
        )


def test_constrained_tokens_are_flagged_for_recomputation_and_counted() -> None:
    """Tokens sampled under a grammar (``constrained_from``) carry the constrained
    distribution's logprobs: flagged missing like unknown ones, in per-call and merged rows."""
    from dataclasses import replace

    forced = replace(call("e0", 0, response=(7, 8, 9), logprobs=(-1.2, -0.1, 0.0)), constrained_from=0)
    tail = replace(call("e0", 1, response=(7, 8, 9), logprobs=(-1.0, -2.0, 0.0)), constrained_from=1)
    free = call("e0", 2, response=(7, 8), logprobs=(-0.5, -0.25))
    batch = build_batch([[record("e0", 1.0, [forced, tail, free])]], BroadcastAssigner())
    rows = {r.seqs[0]: r for r in batch.rows}
    assert rows[0].missing_logprobs == (1, 1, 1)
    assert rows[0].rollout_logprobs == (0.0, 0.0, 0.0)  # the served values never reach the trainer
    assert rows[1].missing_logprobs == (0, 1, 1)
    assert rows[1].rollout_logprobs == (-1.0, 0.0, 0.0)
    assert rows[1].metadata["constrained"] == ((1, 3),)
    assert rows[2].missing_logprobs == () and "constrained" not in rows[2].metadata
    assert batch.stats["constrained_logprob_tokens"] == 5
    assert batch.stats["missing_logprob_tokens"] == 5

    merged_calls = [
        call("e1", 0, prompt=(1, 2), response=(3, 4), logprobs=(-0.1, -0.2)),
        replace(call("e1", 1, prompt=(1, 2, 3, 4, 5), response=(6, 7), logprobs=(-3.0, 0.0)), constrained_from=1),
    ]
    merged = build_batch([[record("e1", 1.0, merged_calls)]], BroadcastAssigner(), mode="merged")
    (row,) = merged.rows
    assert row.response_ids == (3, 4, 5, 6, 7)
    assert row.missing_logprobs == (0, 0, 0, 0, 1)
    assert row.metadata["constrained"] == ((4, 5),)
    assert merged.stats["constrained_logprob_tokens"] == 1
    cut = build_batch([[record("e1", 1.0, merged_calls)]], BroadcastAssigner(), mode="merged", max_len=6)
    assert cut.rows[0].missing_logprobs == () and "constrained" not in cut.rows[0].metadata
    assert cut.stats["constrained_logprob_tokens"] == 0
    # a constrained range that starts before the cut survives it, shortened
    whole_call = [merged_calls[0], replace(merged_calls[1], constrained_from=0)]
    kept = build_batch([[record("e1", 1.0, whole_call)]], BroadcastAssigner(), mode="merged", max_len=6)
    assert kept.rows[0].metadata["constrained"] == ((3, 4),)
    assert kept.rows[0].missing_logprobs == (0, 0, 0, 1)
    assert kept.stats["constrained_logprob_tokens"] == 1


def test_constrained_from_at_the_end_marks_nothing_and_below_zero_marks_everything() -> None:
    """``constrained_from`` equal to the response length constrains no token (no range, no
    flag); a negative one (never written by the gateway) is read as the whole response."""
    from dataclasses import replace

    at_end = replace(call("e0", 0, response=(7, 8), logprobs=(-1.0, -2.0)), constrained_from=2)
    below = replace(call("e0", 1, response=(7, 8), logprobs=(-1.0, -2.0)), constrained_from=-1)
    batch = build_batch([[record("e0", 1.0, [at_end, below])]], BroadcastAssigner())
    rows = {r.seqs[0]: r for r in batch.rows}
    assert rows[0].missing_logprobs == () and "constrained" not in rows[0].metadata
    assert rows[0].rollout_logprobs == (-1.0, -2.0)
    assert rows[1].metadata["constrained"] == ((0, 2),)
    assert rows[1].missing_logprobs == (1, 1)
    assert batch.stats["constrained_logprob_tokens"] == 2
