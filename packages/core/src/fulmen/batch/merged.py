"""Prefix-merged rows: consecutive calls of one agent in one episode as one sequence.

Call ``k+1`` joins the row of call ``k`` (the previous *trained* call of the same agent in the
same episode) only when its prompt ids start with exactly call ``k``'s prompt + response ids.
The extra prompt tokens (tool results, user turns: the observation) go into ``response_ids``
with mask 0, advantage 0.0 and logprob 0.0 (never flagged missing: they are not trained); call ``k+1``'s response follows with mask 1. Calls
that do not train (dropped, untrainable) are never added; their tokens, if they appear in a
later prompt, are masked observation.

Every join that fails is a **break**, counted as ``merge_breaks_<reason>``:

* ``context_change``: both calls recorded messages and call ``k+1``'s messages do not start
  with call ``k``'s (the agent edited, summarised or restarted its history).
* ``retokenisation``: the prompt ids of call ``k`` are intact but call ``k``'s response ids do
  not follow them (re-serialised tool calls, stripped reasoning, end-token or whitespace
  changes: the text was re-encoded).
* ``template_change``: the messages continue but the earlier prompt ids changed (the chat
  template renders past turns differently).
* ``other``: no messages recorded to tell.

Successful joins count in ``merged_calls``. A merged row's ``group_id`` is its calls' common
group key, or the episode's role group (``group_id[@agent]``) when they differ
(``metadata["group_keys"]`` lists each call's); ``policy_version`` is the oldest of its
calls'. Metadata ``spans`` gives ``(seq, start, end)`` of each call's trained tokens in
``response_ids``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from enum import StrEnum

from fulmen.batch.overlong import Overlong, check_length_options
from fulmen.batch.per_call import (
    BuiltRows,
    call_advantages,
    call_logprobs,
    constrained_range,
    finish,
    usable_calls,
)
from fulmen.credit.base import CreditedTransition, GroupCredit, group_key_of, role_key
from fulmen.protocol import Transition
from fulmen.rows import TrainingRow

__all__ = ["BreakReason", "build_merged", "classify_break"]


class BreakReason(StrEnum):
    """Why two consecutive calls could not be merged (module docstring)."""

    CONTEXT_CHANGE = "context_change"
    RETOKENISATION = "retokenisation"
    TEMPLATE_CHANGE = "template_change"
    OTHER = "other"


def _starts_with(seq: Sequence[object], prefix: Sequence[object]) -> bool:
    return len(seq) >= len(prefix) and tuple(seq[: len(prefix)]) == tuple(prefix)


def classify_break(prev: Transition, nxt: Transition) -> BreakReason | None:
    """None when ``nxt`` extends ``prev`` exactly, else why it does not (module docstring)."""
    if _starts_with(nxt.prompt_token_ids, prev.prompt_token_ids + prev.response_token_ids):
        return None
    have_messages = bool(prev.request_messages) and bool(nxt.request_messages)
    if have_messages and not _starts_with(nxt.request_messages, prev.request_messages):
        return BreakReason.CONTEXT_CHANGE
    if _starts_with(nxt.prompt_token_ids, prev.prompt_token_ids):
        return BreakReason.RETOKENISATION
    if have_messages:
        return BreakReason.TEMPLATE_CHANGE
    return BreakReason.OTHER


def _chains(calls: Sequence[CreditedTransition]) -> list[list[CreditedTransition]]:
    by_track: dict[tuple[str, str | None], list[CreditedTransition]] = {}
    for c in calls:
        by_track.setdefault((c.episode.id, c.transition.agent), []).append(c)
    return [sorted(chain, key=lambda c: c.transition.seq) for chain in by_track.values()]


def _row(chain: Sequence[CreditedTransition]) -> TrainingRow:
    first = chain[0]
    response: list[int] = []
    mask: list[int] = []
    logprobs: list[float] = []
    advantages: list[float] = []
    spans: list[tuple[int, int, int]] = []
    missing: list[int] = []
    constrained: list[tuple[int, int]] = []
    prefix_len = len(first.transition.prompt_token_ids)
    for c in chain:
        t = c.transition
        obs = t.prompt_token_ids[prefix_len + len(response):] if response else ()
        response.extend(obs)
        mask.extend([0] * len(obs))
        logprobs.extend([0.0] * len(obs))
        missing.extend([0] * len(obs))
        advantages.extend([0.0] * len(obs))
        start = len(response)
        lp, lp_missing = call_logprobs(c)
        response.extend(t.response_token_ids)
        mask.extend([1] * len(t.response_token_ids))
        logprobs.extend(lp)
        missing.extend(lp_missing or [0] * len(t.response_token_ids))
        advantages.extend(call_advantages(c))
        grammar = constrained_range(c)
        if grammar is not None:
            constrained.append((start + grammar[0], start + grammar[1]))
        spans.append((t.seq, start, len(response)))
    keys = [c.group_key for c in chain]
    metadata: dict[str, object] = {
        "task_id": first.episode.task.id,
        "turns": tuple(c.turn for c in chain),
        "spans": tuple(spans),
    }
    if len(set(keys)) > 1:
        metadata["group_keys"] = tuple(keys)
    if any(missing):
        metadata["logprobs_missing"] = True
    if constrained:
        metadata["constrained"] = tuple(constrained)
    versions = [
        c.transition.policy_version if c.transition.policy_version is not None else c.episode.policy_version
        for c in chain
    ]
    known = [v for v in versions if v is not None]
    return TrainingRow(
        prompt_ids=first.transition.prompt_token_ids,
        response_ids=tuple(response),
        response_mask=tuple(mask),
        rollout_logprobs=tuple(logprobs),
        advantages=tuple(advantages),
        missing_logprobs=tuple(missing) if any(missing) else (),
        group_id=keys[0] if len(set(keys)) == 1 else role_key(group_key_of(first.episode), first.transition.agent),
        episode_id=first.episode.id,
        seqs=tuple(c.transition.seq for c in chain),
        agent=first.transition.agent,
        policy_version=min(known) if known else None,
        metadata=metadata,
    )


def build_merged(
    credits: Sequence[GroupCredit], *, max_len: int | None = None, overlong: Overlong = "truncate"
) -> BuiltRows:
    """Prefix-merged rows (module docstring); ``max_len``/``overlong`` as in per-call mode.

    Raises:
        ValueError: invalid ``max_len`` or ``overlong``.
    """
    check_length_options(max_len, overlong)
    counters: Counter[str] = Counter({f"merge_breaks_{r.value}": 0 for r in BreakReason})
    counters["merged_calls"] += 0
    rows: list[TrainingRow] = []
    for chain in _chains(usable_calls(credits, counters)):
        current = [chain[0]]
        for c in chain[1:]:
            reason = classify_break(current[-1].transition, c.transition)
            if reason is None:
                counters["merged_calls"] += 1
                current.append(c)
                continue
            counters[f"merge_breaks_{reason.value}"] += 1
            counters["merge_breaks"] += 1
            rows.append(_row(current))
            current = [c]
        rows.append(_row(current))
    return finish(rows, max_len, overlong, counters)
