"""Tool-call parsers against the model families' real chat templates and tokenizers
(:mod:`fulmen_local.families`): which templates render tools, each family's default parser, and
the calls a model of the family writes, decoded the way the server decodes them."""

from __future__ import annotations

import functools
import json
from typing import Any

import pytest
from fulmen_local.families import FAMILIES, FamilySpec, build_family_tokenizer
from fulmen_local.server.outputs import SequenceOutput, TokenEvent
from fulmen_local.server.template import template_supports_tools
from fulmen_local.server.textstream import TextStream
from fulmen_local.server.tokens import make_decoder
from fulmen_local.server.tool_parsers import ToolCallDecoding, default_tool_parser, get_tool_parser
from transformers import PreTrainedTokenizerFast

CALLS: list[tuple[str, dict[str, Any]]] = [
    ("get_weather", {"city": "Paris", "days": [1, 2]}),
    ("now", {}),
]


@functools.cache
def _tokenizer(name: str) -> PreTrainedTokenizerFast:
    return build_family_tokenizer(name, vocab_size=400)  # small vocabulary: quick to train


def _generated(tokenizer: PreTrainedTokenizerFast, text: str, end: str) -> list[TokenEvent]:
    """The engine's events for a model writing ``text`` then ``end`` (its end-of-turn token)."""
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    stream = TextStream(make_decoder(tokenizer))
    events = [TokenEvent(0, t, -1.0, (), stream.push(t), None, None, 0) for t in ids]
    end_id = tokenizer.convert_tokens_to_ids(end)
    assert isinstance(end_id, int)
    return [*events, TokenEvent(0, end_id, -1.0, (), stream.finish(), "stop", None, 0)]


def _output(events: list[TokenEvent]) -> SequenceOutput:
    ids = tuple(e.token_id for e in events if e.token_id is not None)
    return SequenceOutput(
        index=0,
        token_ids=ids,
        logprobs=tuple(-1.0 for _ in ids),
        top_logprobs=tuple(() for _ in ids),
        text="".join(e.text for e in events),
        finish_reason="stop",
        stop_reason=None,
    )


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_template_probe_and_default_parser_match_the_family(name: str) -> None:
    spec = FAMILIES[name]
    tokenizer = _tokenizer(name)
    assert template_supports_tools(tokenizer) == spec.supports_tools
    template = tokenizer.chat_template
    assert isinstance(template, str)
    assert default_tool_parser(spec.model_type, template) == spec.tool_parser


def _call_texts(spec: FamilySpec) -> list[tuple[str, list[tuple[str, dict[str, Any]]], str | None]]:
    """Completions a model of the family writes for tool calls: (text, calls, content)."""
    assert spec.format_tool_calls is not None
    if spec.tool_parser == "llama3_json":
        # the template renders one call; a bare call opens the completion, a tagged one may
        # follow a sentence
        one = spec.format_tool_calls(CALLS[:1])
        return [(one, CALLS[:1], None), ("Sure. <|python_tag|>" + one, CALLS[:1], "Sure.")]
    return [("Sure. " + spec.format_tool_calls(CALLS), CALLS, "Sure.")]


@pytest.mark.parametrize("name", sorted(n for n, s in FAMILIES.items() if s.supports_tools))
def test_family_tool_calls_are_parsed_complete_and_streamed(name: str) -> None:
    spec = FAMILIES[name]
    assert spec.tool_parser is not None
    tokenizer = _tokenizer(name)
    decoding = ToolCallDecoding(get_tool_parser(spec.tool_parser), tokenizer)
    for text, calls, content in _call_texts(spec):
        events = _generated(tokenizer, text, spec.end_of_turn)
        parsed = decoding.parse(_output(events), ())
        assert parsed is not None, text
        streamer = decoding.stream(())
        fed = [streamer.feed(e) for e in events]
        streamed = fed[-1][1]
        assert streamed is not None
        for found in (parsed.tool_calls, streamed.tool_calls):
            got = [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in found]
            assert got == calls
        assert parsed.content == content
        assert ("".join(c for c, _ in fed).strip() or None) == content
