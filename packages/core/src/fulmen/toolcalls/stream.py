"""Streaming: which text deltas are content while a tool call may still follow.

:class:`ToolCallStreamFilter` streams text as content until a tool call starts
(:func:`~.base.find_call_start`) and holds back every suffix that may grow into a start
(:func:`~.base.pending_call_start`). From the start on, text is held back and resolved when the
sequence ends: parsed calls, or (malformed or no call) the held text as content. Each push
searches only the new text, so a long completion costs linear time.

The content streamed over a sequence's life, stripped, equals the non-streamed ``content``.
"""

from __future__ import annotations

from collections.abc import Sequence

from fulmen.toolcalls.base import (
    ParsedToolCalls,
    ToolParser,
    find_call_start,
    partial_suffix,
    pending_call_start,
)

__all__ = ["ToolCallStreamFilter"]


class ToolCallStreamFilter:
    """Decides which streamed text is content, for one sequence.

    Feed every text delta to :meth:`push` (returns the content to stream now); at the end call
    :meth:`finish`.

    Args:
        parser: The tool-call format.
        hold: Extra strings never streamed as content: text is held back from the first of
            them on, as from a call start (the server passes the parser's markers that are
            special tokens, which the client's plain text would not show).
    """

    def __init__(self, parser: ToolParser, hold: Sequence[str] = ()) -> None:
        self._parser = parser
        self._hold = tuple(h for h in hold if h and h not in parser.start_markers)
        self._seen = ""  # all text pushed
        self._released = 0  # characters of _seen streamed as content
        self._holding = False  # from a call start (or held marker) on, nothing is released

    @property
    def streamed(self) -> str:
        """The content streamed so far."""
        return self._seen[: self._released]

    def push(self, delta: str) -> str:
        """Add ``delta``; return text that is certainly content."""
        self._seen += delta
        if self._holding:
            return ""
        seen, released = self._seen, self._released
        # nothing before `released` can start a call or a held marker (it was checked, and
        # possible beginnings were held back), so the search starts there
        start = find_call_start(self._parser, seen, released)
        for marker in self._hold:
            found = seen.find(marker, released)
            if found >= 0 and (start is None or found < start):
                start = found
        if start is not None:
            self._holding = True
            end = start
        else:
            waiting = max(
                [
                    pending_call_start(self._parser, seen),
                    *(partial_suffix(seen, h) for h in self._hold),
                ]
            )
            end = len(seen) - waiting
        end = max(end, released)
        self._released = end
        return seen[released:end]

    def finish(self) -> tuple[str, ParsedToolCalls | None]:
        """Resolve the held-back text: ``(content still to stream, parsed calls or None)``.

        With calls, the content still owed is the text outside the calls after the streamed
        part (empty when blank); without, it is all the held-back text.
        """
        parsed = self._parser.parse(self._seen)
        released = self._released
        self._released, self._holding = len(self._seen), True
        if parsed is None:
            return self._seen[released:], None
        tail = self._seen[released : max(parsed.start, released)] + parsed.trailing
        return (tail if tail.strip() else ""), parsed
