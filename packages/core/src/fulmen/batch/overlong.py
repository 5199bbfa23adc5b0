"""The over-long-sequence filter: cut a row to ``max_len`` tokens, or drop it.

``max_len`` bounds ``len(prompt_ids) + len(response_ids)``. ``"truncate"`` keeps the prompt and
the first ``max_len - len(prompt_ids)`` response tokens and sets ``TrainingRow.truncated``
(counter ``overlong_truncated``); a row whose prompt alone fills ``max_len``, or whose kept part
has no trained token, is dropped instead. ``"drop"`` drops every over-long row. Dropped rows
count in ``overlong_dropped``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Literal, cast, get_args

from fulmen.rows import TrainingRow

__all__ = ["OVERLONG_MODES", "Overlong", "check_length_options", "limit_length"]

Overlong = Literal["truncate", "drop"]
"""What to do with a row longer than ``max_len``."""

OVERLONG_MODES: tuple[str, ...] = get_args(Overlong)


def check_length_options(max_len: object, overlong: object) -> None:
    """Raise :class:`ValueError` for a ``max_len`` that is not a positive int or an unknown
    ``overlong`` mode."""
    if max_len is not None and (isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1):
        raise ValueError(f"max_len: expected a positive int or None, got {max_len!r}")
    if overlong not in OVERLONG_MODES:
        raise ValueError(f"overlong: expected one of {', '.join(OVERLONG_MODES)}, got {overlong!r}")


def limit_length(
    row: TrainingRow, max_len: int | None, overlong: Overlong, counters: Counter[str]
) -> TrainingRow | None:
    """The row cut to ``max_len`` (or unchanged), or None when it is dropped (module docstring)."""
    if max_len is None or len(row.prompt_ids) + len(row.response_ids) <= max_len:
        return row
    keep = max_len - len(row.prompt_ids)
    if overlong == "drop" or keep <= 0 or sum(row.response_mask[:keep]) == 0:
        counters["overlong_dropped"] += 1
        return None
    counters["overlong_truncated"] += 1
    metadata = dict(row.metadata)
    if "spans" in metadata:
        spans = cast("tuple[tuple[int, int, int], ...]", metadata["spans"])
        metadata["spans"] = tuple((seq, start, min(end, keep)) for seq, start, end in spans if start < keep)
    if "constrained" in metadata:
        ranges = cast("tuple[tuple[int, int], ...]", metadata["constrained"])
        kept = tuple((start, min(end, keep)) for start, end in ranges if start < keep)
        if kept:
            metadata["constrained"] = kept
        else:
            metadata.pop("constrained")
    missing = row.missing_logprobs[:keep] if any(row.missing_logprobs[:keep]) else ()
    if not missing:
        metadata.pop("logprobs_missing", None)
    return replace(
        row,
        response_ids=row.response_ids[:keep],
        response_mask=row.response_mask[:keep],
        rollout_logprobs=row.rollout_logprobs[:keep],
        advantages=row.advantages[:keep],
        missing_logprobs=missing,
        truncated=True,
        metadata=metadata,
    )
