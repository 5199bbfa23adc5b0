"""Streaming: which text deltas are content while a tool call may still follow.

:class:`ToolCallStreamFilter` streams text as content until a tool call starts (as the parser's
:meth:`~.base.ToolParser.find_start` says) and holds back every suffix that may grow into a
start (:meth:`~.base.ToolParser.pending`). From the start on, text is held back and resolved
when the sequence ends: parsed calls, or (malformed or no call) the held text as content.

The content streamed over a sequence's life, stripped, equals the non-streamed ``content``.
"""

from __future__ import annotations

from collections.abc import Sequence

from fulmen_local.server.tool_parsers.base import ParsedToolCalls, ToolParser, partial_suffix

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
        self._hold = tuple(h for h in hold if h)
        self._seen = ""  # all text pushed
        self._released = 0  # characters of _seen streamed as content
        self._held_from: int | None = None  # where held-back text starts, once known

    @property
    def streamed(self) -> str:
        """The content streamed so far."""
        return self._seen[: self._released]

    def push(self, delta: str) -> str:
        """Add ``delta``; return text that is certainly content."""
        self._seen += delta
        if self._held_from is not None:
            return ""
        seen = self._seen
        start = self._parser.find_start(seen)
        for marker in self._hold:
            found = seen.find(marker, self._released)
            if found >= 0 and (start is None or found < start):
                start = found
        if start is not None:
            self._held_from = end = start
        else:
            waiting = max(
                [self._parser.pending(seen), *(partial_suffix(seen, h) for h in self._hold)]
            )
            end = len(seen) - waiting
        end = max(end, self._released)
        out = seen[self._released : end]
        self._released = end
        return out

    def finish(self) -> tuple[str, ParsedToolCalls | None]:
        """Resolve the held-back text: ``(content still to stream, parsed calls or None)``.

        With calls, the content still owed is the text outside the calls after the streamed
        part (empty when blank); without, it is all the held-back text.
        """
        parsed = self._parser.parse(self._seen)
        rest = self._seen[self._released :]
        released, self._released = self._released, len(self._seen)
        self._held_from = len(self._seen)
        if parsed is None:
            return rest, None
        tail = self._seen[released : max(parsed.start, released)] + parsed.trailing
        return (tail if tail.strip() else ""), parsed
