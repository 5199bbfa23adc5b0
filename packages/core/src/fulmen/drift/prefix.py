"""Prefix continuity: does each call's prompt extend the previous call's prompt + response?

An agent that talks to the model over several calls re-sends its conversation each time. The
ids the trainer sees for call ``k`` (prompt + response) are only the ids of call ``k + 1``'s
context when call ``k + 1``'s prompt ids start with them; when they do not, the model was
trained on tokens it never saw next (the chat template re-rendered a tool call, dropped a
reasoning block, changed whitespace after the end token...). This module checks every pair of
consecutive calls of one agent in one episode, whatever the batch mode, and says where the ids
first differ. The reasons are the batch builder's (:class:`fulmen.batch.merged.BreakReason`):
``context_change`` (the agent itself edited its history) is not token drift; the other three
are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fulmen.batch.merged import BreakReason, classify_break
from fulmen.protocol import EpisodeRecord, Transition

__all__ = ["TOKEN_DRIFT_REASONS", "PrefixCheck", "first_divergence", "prefix_checks"]

TOKEN_DRIFT_REASONS: frozenset[BreakReason] = frozenset(
    {BreakReason.RETOKENISATION, BreakReason.TEMPLATE_CHANGE, BreakReason.OTHER}
)
"""Break reasons that are token drift (everything but the agent's own ``context_change``)."""


def first_divergence(expected: Sequence[int], actual: Sequence[int]) -> int | None:
    """None when ``actual`` starts with ``expected``; else the first index where they differ
    (``len(actual)`` when ``actual`` is a strict prefix of ``expected``)."""
    for i, (a, b) in enumerate(zip(expected, actual, strict=False)):
        if a != b:
            return i
    return None if len(actual) >= len(expected) else len(actual)


@dataclass(frozen=True, slots=True)
class PrefixCheck:
    """One pair of consecutive calls of one agent in one episode."""

    prev: Transition
    """The earlier call."""
    next: Transition
    """The call after it (same episode, same agent)."""
    reason: BreakReason | None
    """None when ``next``'s prompt ids start with ``prev``'s prompt + response ids."""
    divergence: int | None
    """First index of ``prev.prompt + prev.response`` that ``next``'s prompt does not repeat
    (None when it continues)."""

    @property
    def token_drift(self) -> bool:
        """The pair broke for a token reason (not the agent's own context change)."""
        return self.reason in TOKEN_DRIFT_REASONS

    @property
    def expected(self) -> tuple[int, ...]:
        """``prev``'s prompt + response ids: what ``next``'s prompt should start with."""
        return self.prev.prompt_token_ids + self.prev.response_token_ids


def _has_ids(t: Transition) -> bool:
    return t.trainable and bool(t.prompt_token_ids)


def prefix_checks(record: EpisodeRecord) -> list[PrefixCheck]:
    """Every pair of consecutive calls (by ``seq``) of one agent in ``record``'s episode, both
    with token ids; in episode order of the later call."""
    last: dict[str | None, Transition] = {}
    out: list[PrefixCheck] = []
    for t in sorted(record.transitions, key=lambda t: t.seq):
        if not _has_ids(t):
            continue
        prev = last.get(t.agent)
        last[t.agent] = t
        if prev is None:
            continue
        reason = classify_break(prev, t)
        divergence = None if reason is None else first_divergence(
            prev.prompt_token_ids + prev.response_token_ids, t.prompt_token_ids
        )
        out.append(PrefixCheck(prev, t, reason, divergence))
    return out
