"""``mistral``: Mistral's ``[TOOL_CALLS]`` calls (a special token, kept for this parser).

Two shapes follow the first ``[TOOL_CALLS]``:

* a JSON array ``[{"name": ..., "arguments": {...}}, ...]`` (Mistral 7B v0.3, Nemo);
* ``name{...arguments...}`` or ``name[ARGS]{...}`` (newer tokenizers), each further call again
  after ``[TOOL_CALLS]``.

Then nothing but whitespace. Text before the first ``[TOOL_CALLS]`` is content. Call ids are
9 letters and digits, as Mistral's chat templates require when the call is sent back.
"""

from __future__ import annotations

import re
import secrets
import string
from typing import Any, cast

from fulmen.toolcalls.base import (
    ParsedToolCalls,
    arguments_json,
    decode_at,
    find_call_start,
    json_call,
    openai_tool_call,
    skip_space,
)

__all__ = ["ARGS", "TOOL_CALLS", "MistralToolParser", "mistral_tool_call_id"]

TOOL_CALLS = "[TOOL_CALLS]"
ARGS = "[ARGS]"
_NAME = re.compile(r"[A-Za-z0-9_.\-]+")
_ALPHANUMERIC = string.ascii_letters + string.digits


def mistral_tool_call_id() -> str:
    """A fresh Mistral tool call id: 9 letters and digits."""
    return "".join(secrets.choice(_ALPHANUMERIC) for _ in range(9))


class MistralToolParser:
    """Mistral tool calls (see the module docstring)."""

    name = "mistral"
    start_markers = (TOOL_CALLS,)
    openings: tuple[str, ...] = ()
    special_markers = (TOOL_CALLS, ARGS)

    def parse(self, text: str) -> ParsedToolCalls | None:
        """The calls after ``[TOOL_CALLS]``; None when there are none or they are malformed."""
        start = find_call_start(self, text)
        if start is None:
            return None
        pos = skip_space(text, start + len(TOOL_CALLS))
        found = _array(text, pos) if text.startswith("[", pos) else _named(text, pos)
        if not found:
            return None
        calls = tuple(openai_tool_call(n, a, mistral_tool_call_id()) for n, a in found)
        return ParsedToolCalls(content=text[:start].strip() or None, tool_calls=calls, start=start)


def _array(text: str, pos: int) -> list[tuple[str, str]] | None:
    decoded = decode_at(text, pos)
    if decoded is None or skip_space(text, decoded[1]) != len(text):
        return None
    if not isinstance(decoded[0], list):
        return None
    calls: list[tuple[str, str]] = []
    for item in cast("list[Any]", decoded[0]):
        found = json_call(item, argument_keys=("arguments",), required=True)
        if found is None:
            return None
        calls.append(found)
    return calls


def _named(text: str, pos: int) -> list[tuple[str, str]] | None:
    calls: list[tuple[str, str]] = []
    while True:
        name = _NAME.match(text, pos)
        if name is None:
            return None
        pos = skip_space(text, name.end())
        if text.startswith(ARGS, pos):
            pos = skip_space(text, pos + len(ARGS))
        decoded = decode_at(text, pos) if text.startswith("{", pos) else None
        arguments = arguments_json(decoded[0]) if decoded is not None else None
        if decoded is None or arguments is None:
            return None
        calls.append((name.group(), arguments))
        pos = skip_space(text, decoded[1])
        if pos == len(text):
            return calls
        if not text.startswith(TOOL_CALLS, pos):
            return None
        pos = skip_space(text, pos + len(TOOL_CALLS))
