"""Incremental detokenization with stop strings, one instance per generated sequence.

Tokens arrive one at a time; :meth:`TextStream.push` returns the text that became *final*:
characters still forming a multi-byte character (decoded as U+FFFD) are held back until the
character completes, and so is any suffix that could be the start of a stop string. The text
returned over the sequence's life (pushes plus :meth:`TextStream.finish`) concatenates to the
final completion text, which is cut before the first stop string.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

__all__ = ["Decode", "TextStream"]

Decode = Callable[[Sequence[int]], str]
"""Decodes token ids to text, special tokens skipped."""

_REPLACEMENT = "\ufffd"


class TextStream:
    """Detokenizes one sequence incrementally and watches for stop strings.

    Args:
        decode: Decoder for a window of ids (special tokens skipped).
        stop: Stop strings (possibly empty).
    """

    def __init__(self, decode: Decode, stop: Sequence[str] = ()) -> None:
        self._decode = decode
        self._stop = tuple(stop)
        self._max_stop = max((len(s) for s in self._stop), default=0)
        self._ids: list[int] = []
        self._prefix = 0  # window start: a few tokens of context for the decoder
        self._read = 0  # tokens already turned into text
        self._text = ""  # decoded text, not yet cut at a stop string
        self._emitted = 0  # characters of _text already returned
        self._stopped: str | None = None

    @property
    def text(self) -> str:
        """Text returned so far."""
        return self._text[: self._emitted]

    @property
    def stopped(self) -> str | None:
        """The stop string that ended the sequence, if any."""
        return self._stopped

    def push(self, token_id: int) -> str:
        """Add a generated token; return the newly final text (may be empty).

        After a stop string matched (:attr:`stopped` set) further pushes return "".
        """
        if self._stopped is not None:
            return ""
        self._ids.append(token_id)
        old_len = len(self._text)
        self._advance(final=False)
        return self._release(old_len, final=False)

    def finish(self) -> str:
        """The sequence ended (end token, length, stop token): return any held-back text."""
        if self._stopped is not None:
            return ""
        old_len = len(self._text)
        self._advance(final=True)
        return self._release(old_len, final=True)

    def _advance(self, *, final: bool) -> None:
        if self._read == len(self._ids):
            return
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        if len(after) > len(before) and (final or not after.endswith(_REPLACEMENT)):
            self._text += after[len(before) :]
            self._prefix = self._read
            self._read = len(self._ids)

    def _release(self, old_len: int, *, final: bool) -> str:
        text = self._text
        if self._stop:
            start = max(0, old_len - self._max_stop + 1)
            hits = [(pos, s) for s in self._stop if (pos := text.find(s, start)) >= 0]
            if hits:
                pos, s = min(hits)
                out = text[self._emitted : pos]
                self._text = text[:pos]
                self._emitted = pos
                self._stopped = s
                return out
        end = len(text) if final else len(text) - self._held_suffix(text)
        end = max(end, self._emitted)
        out = text[self._emitted : end]
        self._emitted = end
        return out

    def _held_suffix(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that starts some stop string."""
        for k in range(min(len(text), self._max_stop - 1), 0, -1):
            tail = text[-k:]
            if any(s.startswith(tail) for s in self._stop):
                return k
        return 0
