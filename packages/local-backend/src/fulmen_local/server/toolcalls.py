"""Hermes-style tool calls: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``.

:func:`parse_tool_calls` turns a finished completion into OpenAI ``tool_calls`` (ids
``call_<24 hex>``, ``arguments`` as a JSON string) plus the text outside the tags. A block that
is not closed, not JSON, or not ``{"name": str, "arguments": object}`` makes the whole text
plain content (no partial results), like vLLM's Hermes parser.

:class:`ToolCallStreamFilter` serves streaming: content before the first ``<tool_call>`` is
streamed as it arrives; from the tag on, text is held back and resolved when the sequence ends.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from typing import Any, cast

__all__ = [
    "TOOL_CALL_END",
    "TOOL_CALL_START",
    "ParsedToolCalls",
    "ToolCallStreamFilter",
    "new_tool_call_id",
    "parse_tool_calls",
]

TOOL_CALL_START = "<tool_call>"
TOOL_CALL_END = "</tool_call>"
_BLOCK = re.compile(re.escape(TOOL_CALL_START) + r"(.*?)" + re.escape(TOOL_CALL_END), re.S)


@dataclass(frozen=True, slots=True)
class ParsedToolCalls:
    """A completion split into content and tool calls."""

    content: str | None
    """Text outside the tags, stripped; None when empty."""
    tool_calls: tuple[dict[str, Any], ...]
    """OpenAI tool calls: ``{"id", "type": "function", "function": {"name", "arguments"}}``."""


def new_tool_call_id() -> str:
    """A fresh OpenAI-style tool call id, ``call_`` + 24 hex digits."""
    return "call_" + secrets.token_hex(12)


def parse_tool_calls(text: str) -> ParsedToolCalls | None:
    """Parse Hermes tool calls out of ``text``; None when there are none or they are malformed."""
    if TOOL_CALL_START not in text:
        return None
    calls: list[dict[str, Any]] = []
    for block in _BLOCK.findall(text):
        call = _parse_block(block)
        if call is None:
            return None
        calls.append(call)
    outside = _BLOCK.sub("", text)
    if not calls or TOOL_CALL_START in outside or TOOL_CALL_END in outside:
        return None  # an unclosed or stray tag: leave everything as content
    content = outside.strip()
    return ParsedToolCalls(content=content or None, tool_calls=tuple(calls))


def _parse_block(block: str) -> dict[str, Any] | None:
    try:
        data = json.loads(block)
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    call = cast("dict[str, Any]", data)
    name, arguments = call.get("name"), call.get("arguments", {})
    if not isinstance(name, str) or not name:
        return None
    if isinstance(arguments, str):
        args_text = arguments
    elif isinstance(arguments, dict):
        args_text = json.dumps(arguments, ensure_ascii=False)
    else:
        return None
    return {
        "id": new_tool_call_id(),
        "type": "function",
        "function": {"name": name, "arguments": args_text},
    }


class ToolCallStreamFilter:
    """Decides which streamed text is content while tool calls may follow.

    Feed every text delta to :meth:`push` (returns the content to stream now); at the end call
    :meth:`finish` with the complete text.
    """

    def __init__(self) -> None:
        self._seen = ""  # all text pushed
        self._released = 0  # characters of _seen streamed as content
        self._in_call = False

    def push(self, delta: str) -> str:
        """Add ``delta``; return text that is certainly content."""
        self._seen += delta
        if self._in_call:
            return ""
        start = self._seen.find(TOOL_CALL_START, self._released)
        if start >= 0:
            self._in_call = True
            end = start
        else:
            end = len(self._seen) - _partial_tag_suffix(self._seen)
        out = self._seen[self._released : max(end, self._released)]
        self._released = max(end, self._released)
        return out

    def finish(self) -> tuple[str, ParsedToolCalls | None]:
        """Resolve the held-back text: ``(content still to stream, parsed calls or None)``.

        With calls, the remaining content is the non-blank text after the tool-call blocks;
        without, it is all the held-back text.
        """
        parsed = parse_tool_calls(self._seen)
        rest = self._seen[self._released :]
        self._released = len(self._seen)
        if parsed is None:
            return rest, None
        tail = _BLOCK.sub("", rest)
        return (tail if tail.strip() else ""), parsed


def _partial_tag_suffix(text: str) -> int:
    for k in range(min(len(text), len(TOOL_CALL_START) - 1), 0, -1):
        if TOOL_CALL_START.startswith(text[-k:]):
            return k
    return 0
