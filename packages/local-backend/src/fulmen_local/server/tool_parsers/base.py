"""What every tool-call parser provides, and the pieces they share.

A parser is stateless: :meth:`ToolParser.parse` reads a finished completion, and
:meth:`ToolParser.find_start` / :meth:`ToolParser.pending` tell the streaming filter
(:mod:`.stream`) where a call begins. The contract tying them together:

* ``parse(text)`` returns calls only when ``find_start(text)`` is not None, and its
  :attr:`ParsedToolCalls.start` is that index;
* ``find_start`` is stable: once it returns ``s`` for a text, it returns ``s`` for every
  extension of that text;
* text before ``len(text) - pending(text)`` can never become part of a start marker (so the
  filter may stream it as content).

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
    "json_call",
    "new_tool_call_id",
    "openai_tool_call",
    "partial_suffix",
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
    def markers(self) -> tuple[str, ...]:
        """Strings the parser must see that tokenizers may hold as special tokens (the server
        keeps exactly these when it decodes text for the parser)."""
        ...

    def parse(self, text: str) -> ParsedToolCalls | None:
        """Split a finished completion; None when it has no calls or they are malformed."""
        ...

    def find_start(self, text: str) -> int | None:
        """Index where a tool call begins in ``text``; None when none has begun."""
        ...

    def pending(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that may still grow into a call start."""
        ...


def new_tool_call_id() -> str:
    """A fresh OpenAI-style tool call id, ``call_`` + 24 hex digits."""
    return "call_" + secrets.token_hex(12)


def partial_suffix(text: str, marker: str) -> int:
    """Length of the longest proper prefix of ``marker`` that ``text`` ends with."""
    for k in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-k:]):
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
