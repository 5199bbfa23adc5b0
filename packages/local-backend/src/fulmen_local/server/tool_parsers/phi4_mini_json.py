"""``phi4_mini_json``: Phi-4-mini's ``functools[{"name": ..., "arguments": {...}}, ...]``.

A call starts at the first ``functools[``; what follows is one JSON array of
``{"name": ..., "arguments": {...}}`` objects (``"parameters"`` is accepted instead of
``"arguments"``) and then nothing but whitespace. Text before ``functools[`` is content. An
empty or malformed array is plain content (vLLM's parser cuts the array at the first ``]``,
which breaks on list arguments; this one reads the whole JSON value).
"""

from __future__ import annotations

from typing import Any, cast

from fulmen_local.server.tool_parsers._json import decode_at, skip_space
from fulmen_local.server.tool_parsers.base import (
    ParsedToolCalls,
    json_call,
    openai_tool_call,
    partial_suffix,
)

__all__ = ["FUNCTOOLS", "Phi4MiniJsonToolParser"]

FUNCTOOLS = "functools["


class Phi4MiniJsonToolParser:
    """Phi-4-mini JSON tool calls (see the module docstring)."""

    name = "phi4_mini_json"
    markers: tuple[str, ...] = ()

    def find_start(self, text: str) -> int | None:
        """Index of the first ``functools[``."""
        found = text.find(FUNCTOOLS)
        return found if found >= 0 else None

    def pending(self, text: str) -> int:
        """A suffix that may be the beginning of ``functools[``."""
        return partial_suffix(text, FUNCTOOLS)

    def parse(self, text: str) -> ParsedToolCalls | None:
        """The array's calls; None when there are none or they are malformed."""
        start = self.find_start(text)
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
