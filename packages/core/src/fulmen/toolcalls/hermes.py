"""``hermes``: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` blocks (Qwen, Hermes).

Any number of blocks, anywhere in the text; the content is the text outside them. A block that
is not closed, not JSON, or not ``{"name": str, "arguments": object}`` (``arguments`` may be
omitted, or a string holding a JSON object), or a stray tag outside the blocks, makes the
whole text plain content.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fulmen.toolcalls.base import (
    ParsedToolCalls,
    find_call_start,
    json_call,
    openai_tool_call,
)

__all__ = ["TOOL_CALL_END", "TOOL_CALL_START", "HermesToolParser"]

TOOL_CALL_START = "<tool_call>"
TOOL_CALL_END = "</tool_call>"
_BLOCK = re.compile(re.escape(TOOL_CALL_START) + r"(.*?)" + re.escape(TOOL_CALL_END), re.S)


class HermesToolParser:
    """Hermes-style tool calls (see the module docstring)."""

    name = "hermes"
    start_markers = (TOOL_CALL_START,)
    openings: tuple[str, ...] = ()
    special_markers = (TOOL_CALL_START, TOOL_CALL_END)

    def parse(self, text: str) -> ParsedToolCalls | None:
        """Every block as a call; None when there is none or any is malformed."""
        start = find_call_start(self, text)
        if start is None:
            return None
        calls: list[dict[str, Any]] = []
        for block in _BLOCK.findall(text):
            try:
                found = json_call(json.loads(block), argument_keys=("arguments",), required=False)
            except json.JSONDecodeError:
                return None
            if found is None:
                return None
            calls.append(openai_tool_call(*found))
        outside = _BLOCK.sub("", text)
        if not calls or TOOL_CALL_START in outside or TOOL_CALL_END in outside:
            return None  # an unclosed or stray tag: leave everything as content
        return ParsedToolCalls(
            content=outside.strip() or None,
            tool_calls=tuple(calls),
            start=start,
            trailing=_BLOCK.sub("", text[start:]),
        )
