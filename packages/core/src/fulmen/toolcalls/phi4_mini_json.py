"""``phi4_mini_json``: Phi-4-mini's ``functools[{"name": ..., "arguments": {...}}, ...]``.

A call starts at the first ``functools[``; what follows is one JSON array of
``{"name": ..., "arguments": {...}}`` objects (``"parameters"`` is accepted instead of
``"arguments"``) and then nothing but whitespace. Text before ``functools[`` is content. An
empty or malformed array is plain content (vLLM's parser cuts the array at the first ``]``,
which breaks on list arguments; this one reads the whole JSON value).
"""

from __future__ import annotations

from typing import Any, cast

from fulmen.toolcalls.base import (
    ParsedToolCalls,
    decode_at,
    find_call_start,
    json_call,
    openai_tool_call,
    skip_space,
)

__all__ = ["FUNCTOOLS", "Phi4MiniJsonToolParser"]

FUNCTOOLS = "functools["


class Phi4MiniJsonToolParser:
    """Phi-4-mini JSON tool calls (see the module docstring)."""

    name = "phi4_mini_json"
    start_markers = (FUNCTOOLS,)
    openings: tuple[str, ...] = ()
    special_markers: tuple[str, ...] = ()

    def parse(self, text: str) -> ParsedToolCalls | None:
        """The array's calls; None when there are none or they are malformed."""
        start = find_call_start(self, text)
        if start is None:
            return None
        decoded = decode_at(text, start + len(FUNCTOOLS) - 1)  # at the "["
        if decoded is None or skip_space(text, decoded[1]) != len(text):
            return None
        items = decoded[0]
        if not isinstance(items, list) or not items:
            return None
        calls: list[dict[str, Any]] = []
        for item in cast("list[object]", items):
            found = json_call(item, argument_keys=("arguments", "parameters"), required=True)
            if found is None:
                return None
            calls.append(openai_tool_call(*found))
        return ParsedToolCalls(
            content=text[:start].strip() or None, tool_calls=tuple(calls), start=start
        )
