"""A tool-call parser applied to the engine's outputs, seeing the special tokens it needs.

The engine decodes with special tokens skipped, which is the text clients get. Some formats
start with a special token (Llama's ``<|python_tag|>``, Mistral's ``[TOOL_CALLS]``): for them
the parser reads a second decoding of the same tokens that keeps those markers (and only
them), cut at stop strings the same way. Content handed to the client stays the engine's text:
plain text when no call is parsed, the text outside the calls when one is.
"""

from __future__ import annotations

from collections.abc import Sequence

from fulmen.toolcalls.base import ParsedToolCalls, ToolParser
from fulmen.toolcalls.stream import ToolCallStreamFilter
from transformers import PreTrainedTokenizerBase

from fulmen_local.server.outputs import SequenceOutput, TokenEvent
from fulmen_local.server.textstream import Decode, TextStream
from fulmen_local.server.tokens import make_decoder, special_marker_ids

__all__ = ["ChoiceToolCalls", "ToolCallDecoding"]


def _token_in_text(finish_reason: str | None, stop_reason: str | int | None) -> bool:
    """Whether the engine turned a sequence's last token into text: not when it ended the
    sequence as an end-of-sequence token or a stop token id (mirrors the engine)."""
    return not (finish_reason == "stop" and not isinstance(stop_reason, str))


class ToolCallDecoding:
    """A parser bound to one tokenizer; shared by all requests of a server.

    Args:
        parser: The tool-call format.
        tokenizer: The served tokenizer.
    """

    def __init__(self, parser: ToolParser, tokenizer: PreTrainedTokenizerBase) -> None:
        self.parser = parser
        special = special_marker_ids(tokenizer, parser.special_markers)
        self.hidden_markers: tuple[str, ...] = tuple(special)
        """The parser's markers that are special tokens here (plain decoding hides them)."""
        self._decode: Decode | None = (
            make_decoder(tokenizer, keep=frozenset(special.values())) if special else None
        )

    def parser_text(self, out: SequenceOutput, stop: Sequence[str]) -> str:
        """The text the parser reads for a finished sequence generated with ``stop``."""
        if self._decode is None:
            return out.text
        ids = out.token_ids
        if ids and not _token_in_text(out.finish_reason, out.stop_reason):
            ids = ids[:-1]
        stream = TextStream(self._decode, stop)
        return "".join(stream.push(t) for t in ids) + stream.finish()

    def parse(self, out: SequenceOutput, stop: Sequence[str]) -> ParsedToolCalls | None:
        """Tool calls of a finished sequence, or None (then its content is ``out.text``)."""
        return self.parser.parse(self.parser_text(out, stop))

    def stream(self, stop: Sequence[str]) -> ChoiceToolCalls:
        """Streaming state for one choice generated with ``stop``."""
        view = TextStream(self._decode, stop) if self._decode is not None else None
        return ChoiceToolCalls(ToolCallStreamFilter(self.parser, self.hidden_markers), view)


class ChoiceToolCalls:
    """One streamed choice: content to send per event, the calls at the end."""

    def __init__(self, flt: ToolCallStreamFilter, view: TextStream | None) -> None:
        self._filter = flt
        self._view = view
        self._text = ""  # the engine's text so far (what the client would see)

    def feed(self, event: TokenEvent) -> tuple[str, ParsedToolCalls | None]:
        """``(content to stream now, calls)``; calls only on the finishing event, when the
        sequence holds well-formed calls."""
        self._text += event.text
        content = self._filter.push(self._view_delta(event))
        if event.finish_reason is None:
            return content, None
        streamed = self._filter.streamed
        tail, parsed = self._filter.finish()
        if parsed is None and self._view is not None:
            # The held text is the parser's view; the client gets the engine's text instead.
            # The streamed part never holds a hidden marker, so it prefixes the engine's text.
            tail = self._text[len(streamed) :] if self._text.startswith(streamed) else tail
        return content + tail, parsed

    def _view_delta(self, event: TokenEvent) -> str:
        view = self._view
        if view is None:
            return event.text
        text = ""
        if event.token_id is not None and _token_in_text(event.finish_reason, event.stop_reason):
            text = view.push(event.token_id)
        if event.finish_reason is not None:
            text += view.finish()
        return text
