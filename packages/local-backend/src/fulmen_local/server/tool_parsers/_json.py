"""Reading a run of JSON values out of model text (shared by the JSON-based formats)."""

from __future__ import annotations

import json

__all__ = ["decode_at", "skip_space"]

_DECODER = json.JSONDecoder()


def skip_space(text: str, pos: int) -> int:
    """The first index at or after ``pos`` that is not whitespace."""
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def decode_at(text: str, pos: int) -> tuple[object, int] | None:
    """The JSON value starting exactly at ``pos`` and the index after it; None when there is
    no valid value there."""
    try:
        return _DECODER.raw_decode(text, pos)
    except (json.JSONDecodeError, RecursionError):
        return None
