"""What every tool-call parser provides, and the pieces they share.

A parser (:class:`ToolParser`) is stateless. It says where a call starts — at the first of its
:attr:`~ToolParser.start_markers` anywhere, or at one of its :attr:`~ToolParser.openings` that
opens the completion (after whitespace) — and :meth:`~ToolParser.parse` reads a finished
completion. :func:`find_call_start` and :func:`pending_call_start` apply those rules (the
streaming filter of :mod:`.stream` uses them incrementally); ``parse`` returns calls only when
:func:`find_call_start` finds a start, with :attr:`ParsedToolCalls.start` at that index.

Malformed call text (bad JSON, a missing name, stray text after the calls, ...) makes
``parse`` return None: the whole completion stays plain content, never a partial result.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any, Protocol, cast

__all__ = [
    "ParsedToolCalls",
    "ToolParser",
    "arguments_json",
    "decode_at",
    "find_call_start",
    "json_call",
    "new_tool_call_id",
    "openai_tool_call",
    "partial_suffix",
    "pending_call_start",
    "skip_space",
]


@dataclass(frozen=True, slots=True)
class ParsedToolCalls:
    """A completion split into content and tool calls."""

    content: str | None
    """Text outside the calls, stripped; None when empty (the non-streamed ``content``)."""
    tool_calls: tuple[dict[str, Any], ...]
    """OpenAI tool calls: ``{"id", "type": "function", "function": {"name", "arguments"}}``,
    ``arguments`` a JSON string."""
    start: int = 0
    """Index in the parsed text where the first call begins (its start marker)."""
    trailing: str = ""
    """Raw text outside the calls after :attr:`start` (content a stream still owes)."""


class ToolParser(Protocol):
    """One model family's tool-call format (named like vLLM's ``--tool-call-parser``)."""

    @property
    def name(self) -> str:
        """The registry name, e.g. ``hermes``."""
        ...

    @property
    def start_markers(self) -> tuple[str, ...]:
        """A call starts at the first of these, anywhere in the completion."""
        ...

    @property
    def openings(self) -> tuple[str, ...]:
        """A call also starts at one of these when it opens the completion (after
        whitespace)."""
        ...

    @property
    def special_markers(self) -> tuple[str, ...]:
        """Markup the parser must see that tokenizers may hold as special tokens (the server
        keeps exactly these when it decodes text for the parser)."""
        ...

    def parse(self, text: str) -> ParsedToolCalls | None:
        """Split a finished completion; None when it has no calls or they are malformed."""
        ...


_DECODER = json.JSONDecoder()


def decode_at(text: str, pos: int) -> tuple[object, int] | None:
    """The JSON value starting exactly at ``pos`` and the index after it; None when there is
    no valid value there."""
    try:
        return _DECODER.raw_decode(text, pos)
    except (json.JSONDecodeError, RecursionError):
        return None


def skip_space(text: str, pos: int) -> int:
    """The first index at or after ``pos`` that is not whitespace."""
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def find_call_start(parser: ToolParser, text: str, since: int = 0) -> int | None:
    """Where a call starts in ``text`` (see :class:`ToolParser`); None when none has.

    ``since``: no call starts before this index (text already known to be content), so the
    search begins there. The result is stable: it stays the same as the text grows.
    """
    best: int | None = None
    for marker in parser.start_markers:
        found = text.find(marker, since)
        if found >= 0 and (best is None or found < best):
            best = found
    if since == 0 and parser.openings:
        first = skip_space(text, 0)
        opens = any(text.startswith(o, first) for o in parser.openings)
        if opens and (best is None or first < best):
            best = first
    return best


def pending_call_start(parser: ToolParser, text: str) -> int:
    """Length of the longest suffix of ``text`` that may still grow into a call start: a
    partial start marker, or (openings) the whole text while it is whitespace plus perhaps
    the beginning of an opening."""
    held = max((partial_suffix(text, m) for m in parser.start_markers), default=0)
    if parser.openings:
        first = skip_space(text, 0)
        longest = max(len(o) for o in parser.openings)
        rest = text[first:] if len(text) - first < longest else None
        if rest is not None and any(o.startswith(rest) for o in parser.openings):
            held = len(text)
    return held


def new_tool_call_id() -> str:
    """A fresh OpenAI-style tool call id, ``call_`` + 24 hex digits."""
    return "call_" + secrets.token_hex(12)


def partial_suffix(text: str, marker: str) -> int:
    """Length of the longest proper prefix of ``marker`` that ``text`` ends with."""
    if not text or text[-1] not in marker[:-1]:
        return 0  # the common case, decided without a loop
    for k in range(min(len(text), len(marker) - 1), 0, -1):
        if text.endswith(marker[:k]):
            return k
    return 0


def arguments_json(arguments: object) -> str | None:
    """``arguments`` as the OpenAI JSON string: an object is dumped, a string holding a JSON
    object is kept verbatim; anything else is None (malformed)."""
    if isinstance(arguments, dict):
        return json.dumps(arguments, ensure_ascii=False)
    if isinstance(arguments, str):
        try:
            decoded = json.loads(arguments)
        except json.JSONDecodeError:
            return None
        return arguments if isinstance(decoded, dict) else None
    return None


def openai_tool_call(name: str, arguments: str, call_id: str | None = None) -> dict[str, Any]:
    """An OpenAI ``tool_calls[]`` entry (a fresh ``call_...`` id unless ``call_id`` is given)."""
    return {
        "id": call_id or new_tool_call_id(),
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


def json_call(
    obj: object, *, argument_keys: tuple[str, ...], required: bool
) -> tuple[str, str] | None:
    """``(name, arguments JSON)`` of a decoded ``{"name": ..., <argument key>: {...}}``.

    Exactly one of ``argument_keys`` holds the arguments; when none is present the arguments
    are ``{}``, or the call is malformed if ``required``. None when ``obj`` is not such an
    object.
    """
    if not isinstance(obj, dict):
        return None
    call = cast("dict[str, Any]", obj)
    name = call.get("name")
    if not isinstance(name, str) or not name:
        return None
    present = [k for k in argument_keys if k in call]
    if len(present) > 1 or (required and not present):
        return None  # both "arguments" and "parameters" (ambiguous), or neither when required
    arguments = arguments_json(call[present[0]] if present else {})
    return None if arguments is None else (name, arguments)
