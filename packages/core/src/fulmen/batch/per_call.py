"""Per-call rows (the default): one training row per trained LLM call, always exact.

Each row is the call's exact ``prompt_token_ids`` and ``response_token_ids``, every response
token trained (mask 1), with the call's advantage on every token (or its per-token
advantages). Row metadata: ``task_id``, ``turns`` (turn index of each call), ``spans``
(``(seq, start, end)`` of each call's trained tokens in ``response_ids``) and, when some
rollout logprob is unknown, ``logprobs_missing = True``.

**Missing logprobs are never passed off as 0.0.** A call whose server returned no logprobs,
or not one per response token, has every token flagged in ``TrainingRow.missing_logprobs``; a
non-finite logprob flags its token only. ``rollout_logprobs`` holds a 0.0 placeholder at
flagged tokens, which the trainer must replace with its own recomputation (or drop the row)
(counter ``rows_logprobs_missing``; ``missing_logprob_tokens`` counts the tokens).

**Constrained logprobs are never trained against either.** Tokens the server sampled under a
grammar (``Transition.constrained_from`` on: forced or ``strict`` tool calls, structured output)
carry the constrained distribution's logprobs, not the policy's, so they are flagged missing
too and recomputed by the trainer (counter ``constrained_logprob_tokens``, included in
``missing_logprob_tokens``); row metadata ``constrained`` lists their ``(start, end)`` ranges in
``response_ids``.

A trained call without prompt ids cannot be trained exactly and is skipped
(``empty_prompt_transitions``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

from fulmen.batch.overlong import Overlong, check_length_options, limit_length
from fulmen.credit.base import CreditedTransition, GroupCredit
from fulmen.rows import TrainingRow

__all__ = [
    "BuiltRows",
    "build_per_call",
    "call_advantages",
    "call_logprobs",
    "constrained_range",
    "constrained_tokens",
    "finish",
    "usable_calls",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class BuiltRows:
    """Rows built from credited groups, with the builder's counters."""

    rows: tuple[TrainingRow, ...]
    """The rows, in group, episode, then ``seq`` order."""
    stats: dict[str, int] = field(default_factory=dict)
    """Builder counters: ``rows``, ``trained_tokens``, ``overlong_*``, ``merge_breaks_*``..."""


def call_advantages(c: CreditedTransition) -> tuple[float, ...]:
    """One advantage per response token of a trained call."""
    if c.token_advantages is not None:
        return c.token_advantages
    if c.advantage is None:
        raise ValueError(f"transition {c.transition.request_id or c.transition.seq} does not train")
    return (c.advantage,) * len(c.transition.response_token_ids)


def call_logprobs(c: CreditedTransition) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """The call's rollout logprobs and its missing mask (1 where unknown; 0.0 placeholder).

    Every token is unknown when the server returned none or not one per response token; a
    non-finite value (NaN, infinity) marks its own token, and so does every token from
    ``constrained_from`` on (sampled under a grammar: not the policy's logprob). The mask is
    empty when none is.
    """
    n = len(c.transition.response_token_ids)
    lp = c.transition.response_logprobs
    if lp is None or len(lp) != n:
        return (0.0,) * n, (1,) * n
    cut = c.transition.constrained_from  # a negative cut marks every token
    if cut is None:
        cut = n
    missing = tuple(0 if i < cut and math.isfinite(x) else 1 for i, x in enumerate(lp))
    if not any(missing):
        return lp, ()
    return tuple(x if m == 0 else 0.0 for x, m in zip(lp, missing, strict=True)), missing


def constrained_range(c: CreditedTransition) -> tuple[int, int] | None:
    """``(start, end)`` of the call's response tokens sampled under a grammar, or None."""
    n = len(c.transition.response_token_ids)
    cut = c.transition.constrained_from
    if cut is None or cut >= n:
        return None
    return max(cut, 0), n


def constrained_tokens(row: TrainingRow) -> int:
    """Response tokens of ``row`` sampled under a grammar (metadata ``constrained``)."""
    ranges = cast("tuple[tuple[int, int], ...]", row.metadata.get("constrained", ()))
    return sum(end - start for start, end in ranges)


def usable_calls(credits: Sequence[GroupCredit], counters: Counter[str]) -> list[CreditedTransition]:
    """Trained calls that have prompt ids, in group, episode, ``seq`` order."""
    out: list[CreditedTransition] = []
    for group in credits:
        for c in group.trained:
            if not c.transition.prompt_token_ids:
                counters["empty_prompt_transitions"] += 1
                continue
            out.append(c)
    return out


def finish(
    rows: list[TrainingRow], max_len: int | None, overlong: Overlong, counters: Counter[str]
) -> BuiltRows:
    """Apply the length limit and the row counters."""
    kept = [r for r in (limit_length(r, max_len, overlong, counters) for r in rows) if r is not None]
    counters["rows"] += len(kept)
    counters["trained_tokens"] += sum(r.num_trained_tokens for r in kept)
    counters["rows_logprobs_missing"] += sum(1 for r in kept if r.logprobs_missing)
    counters["missing_logprob_tokens"] += sum(sum(r.missing_logprobs) for r in kept)
    counters["constrained_logprob_tokens"] += sum(constrained_tokens(r) for r in kept)
    return BuiltRows(rows=tuple(kept), stats=dict(counters))


def build_per_call(
    credits: Sequence[GroupCredit], *, max_len: int | None = None, overlong: Overlong = "truncate"
) -> BuiltRows:
    """One row per trained call (module docstring).

    Args:
        credits: credited groups (from :meth:`fulmen.credit.CreditAssigner.assign`).
        max_len: maximum ``prompt + response`` length, None for no limit.
        overlong: ``"truncate"`` or ``"drop"`` rows longer than ``max_len``.

    Raises:
        ValueError: invalid ``max_len`` or ``overlong``.
    """
    check_length_options(max_len, overlong)
    counters: Counter[str] = Counter()
    rows: list[TrainingRow] = []
    for c in usable_calls(credits, counters):
        t = c.transition
        n = len(t.response_token_ids)
        lp, missing = call_logprobs(c)
        metadata: dict[str, object] = {
            "task_id": c.episode.task.id,
            "turns": (c.turn,),
            "spans": ((t.seq, 0, n),),
        }
        if missing:
            metadata["logprobs_missing"] = True
        grammar = constrained_range(c)
        if grammar is not None:
            metadata["constrained"] = (grammar,)
        rows.append(TrainingRow(
            prompt_ids=t.prompt_token_ids,
            response_ids=t.response_token_ids,
            response_mask=(1,) * n,
            rollout_logprobs=lp,
            missing_logprobs=missing,
            advantages=call_advantages(c),
            group_id=c.group_key,
            episode_id=c.episode.id,
            seqs=(t.seq,),
            agent=t.agent,
            policy_version=t.policy_version if t.policy_version is not None else c.episode.policy_version,
            metadata=metadata,
        ))
    return finish(rows, max_len, overlong, counters)
