"""``llama3_json``: Llama 3.x JSON tool calls.

The call text is an optional ``<|python_tag|>`` (a special token, which the server keeps for
this parser) followed by one or more ``{"name": ..., "parameters": {...}}`` objects
(``"arguments"`` is accepted instead of ``"parameters"``), separated by ``;`` or whitespace,
and nothing else. A call starts at the first ``<|python_tag|>``, or at a ``{`` that opens the
completion (after whitespace); text before ``<|python_tag|>`` is content. Anything that does
not read as such calls (a JSON answer without ``name``, stray text after the objects, ...) is
plain content.

Unlike vLLM's parser, which finds JSON objects anywhere and drops the surrounding text, a
``{`` in the middle of prose does not start a call here, and text before the tag is kept.
"""

from __future__ import annotations

from typing import Any

from fulmen.toolcalls.base import (
    ParsedToolCalls,
    decode_at,
    find_call_start,
    json_call,
    openai_tool_call,
    skip_space,
)

__all__ = ["PYTHON_TAG", "Llama3JsonToolParser"]

PYTHON_TAG = "<|python_tag|>"


class Llama3JsonToolParser:
    """Llama 3.x JSON tool calls (see the module docstring)."""

    name = "llama3_json"
    start_markers = (PYTHON_TAG,)
    openings = ("{",)
    special_markers = (PYTHON_TAG,)

    def parse(self, text: str) -> ParsedToolCalls | None:
        """The calls from the start on; None when there are none or they are malformed."""
        start = find_call_start(self, text)
        if start is None:
            return None
        pos = start + len(PYTHON_TAG) if text.startswith(PYTHON_TAG, start) else start
        calls: list[dict[str, Any]] = []
        while True:
            pos = skip_space(text, pos)
            decoded = decode_at(text, pos)
            if decoded is None:
                return None
            obj, pos = decoded
            found = json_call(obj, argument_keys=("parameters", "arguments"), required=True)
            if found is None:
                return None
            calls.append(openai_tool_call(*found))
            pos = skip_space(text, pos)
            if pos == len(text):
                break
            if text[pos] == ";":
                pos = skip_space(text, pos + 1)
                if pos == len(text):
                    break  # a trailing separator
        return ParsedToolCalls(
            content=text[:start].strip() or None, tool_calls=tuple(calls), start=start
        )
