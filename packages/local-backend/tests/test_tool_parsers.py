"""Tool-call parsers (vLLM's ``--tool-call-parser`` names): complete and streamed parsing,
malformed call text, the registry and family defaults, special-token markers, template probe."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import pytest
from fulmen.toolcalls.base import find_call_start
from fulmen_local.model.tokenizer import build_tokenizer
from fulmen_local.server.outputs import SequenceOutput, TokenEvent
from fulmen_local.server.template import template_supports_tools
from fulmen_local.server.textstream import TextStream
from fulmen_local.server.tokens import make_decoder
from fulmen_local.server.tool_parsers import (
    TOOL_PARSER_NAMES,
    ToolCallDecoding,
    ToolCallStreamFilter,
    UnknownToolParserError,
    default_tool_parser,
    get_tool_parser,
)
from transformers import PreTrainedTokenizerFast

Calls = list[tuple[str, dict[str, Any]]]

# (parser, completion, expected content, expected calls)
WELL_FORMED: list[tuple[str, str, str | None, Calls]] = [
    (
        "hermes",
        'Let me compute.\n<tool_call>{"name": "calc", "arguments": {"x": "3*4"}}</tool_call>\n'
        '<tool_call>{"name": "now", "arguments": {}}</tool_call>',
        "Let me compute.",
        [("calc", {"x": "3*4"}), ("now", {})],
    ),
    (
        "hermes",
        '<tool_call>{"name": "a", "arguments": "{\\"k\\": 1}"}</tool_call> done',
        "done",
        [("a", {"k": 1})],
    ),
    ("hermes", '<tool_call>{"name": "a"}</tool_call>', None, [("a", {})]),
    (
        "llama3_json",
        '<|python_tag|>{"name": "weather", "parameters": {"city": "Paris", "days": [1, 2]}}',
        None,
        [("weather", {"city": "Paris", "days": [1, 2]})],
    ),
    (
        "llama3_json",
        '  {"name": "a", "parameters": {"n": {"m": 1}}}; {"name": "b", "arguments": {}};\n',
        None,
        [("a", {"n": {"m": 1}}), ("b", {})],
    ),
    (
        "llama3_json",
        'Checking.<|python_tag|>{"name": "a", "parameters": {}}\n{"name": "b", "parameters": {}}',
        "Checking.",
        [("a", {}), ("b", {})],
    ),
    (
        "pythonic",
        '[get_weather(city="San Francisco", metric=True), now()]',
        None,
        [("get_weather", {"city": "San Francisco", "metric": True}), ("now", {})],
    ),
    (
        "pythonic",
        "\n [f(a=[1, 2.5, None], b={'k': (1, 'x')}, c=-3)]\n",
        None,
        [("f", {"a": [1, 2.5, None], "b": {"k": [1, "x"]}, "c": -3})],
    ),
    (
        "phi4_mini_json",
        'functools[{"name": "a", "arguments": {"xs": [1, 2]}}, {"name": "b", "parameters": {}}]',
        None,
        [("a", {"xs": [1, 2]}), ("b", {})],
    ),
    (
        "phi4_mini_json",
        'I will look. functools[{"name": "a", "arguments": {}}] ',
        "I will look.",
        [("a", {})],
    ),
    (
        "mistral",
        'Sure.[TOOL_CALLS] [{"name": "add", "arguments": {"a": 1, "b": [2]}}]',
        "Sure.",
        [("add", {"a": 1, "b": [2]})],
    ),
    (
        "mistral",
        '[TOOL_CALLS]add{"a": 1}[TOOL_CALLS]mul[ARGS]{"b": {"c": 2}}',
        None,
        [("add", {"a": 1}), ("mul", {"b": {"c": 2}})],
    ),
]

MALFORMED: list[tuple[str, str]] = [
    ("hermes", "no tools here"),
    ("hermes", '<tool_call>{"name": "calc", "arguments": {"x": 1}</tool_call>'),  # bad JSON
    ("hermes", '<tool_call>{"arguments": {}}</tool_call>'),  # no name
    ("hermes", '<tool_call>{"name": "calc", "arguments": 3}</tool_call>'),  # not an object
    ("hermes", '<tool_call>{"name": "calc", "arguments": "not json"}</tool_call>'),
    ("hermes", '<tool_call>{"name": "calc", "arguments": {}}'),  # never closed
    ("hermes", '<tool_call>{"name": "a", "arguments": {}}</tool_call><tool_call>{"name": "b"'),
    ("hermes", '</tool_call> <tool_call>{"name": "a", "arguments": {}}</tool_call>'),  # stray
    ("llama3_json", "The answer is 12."),
    ("llama3_json", 'Use {"name": "a", "parameters": {}} next time'),  # "{" inside prose
    ("llama3_json", '{"name": "Alice", "age": 3}'),  # a JSON answer, not a call
    ("llama3_json", '{"name": "a", "parameters": {}} and some text'),  # text after the call
    ("llama3_json", '{"name": "a", "parameters": {}, "arguments": {}}'),  # ambiguous
    ("llama3_json", '<|python_tag|>{"name": "a", "parameters": {"x": 1}'),  # unclosed
    ("llama3_json", '<|python_tag|>brave_search.call(query="x")'),  # built-in tool syntax
    ("llama3_json", '{"name": "a", "parameters": {}};; {"name": "b", "parameters": {}}'),
    ("pythonic", "Plain text [f(a=1)]"),
    ("pythonic", "[]"),
    ("pythonic", "[f(1)]"),  # positional argument
    ("pythonic", "[f(a=x)]"),  # a name, not a literal
    ("pythonic", "[f(a=__import__('os').system('true'))]"),  # a call: never evaluated
    ("pythonic", "[os.system(a=1)]"),  # a dotted name
    ("pythonic", "[f(a={1, 2})]"),  # a set is not JSON
    ("pythonic", "[f(**kw)]"),
    ("pythonic", "[f(a=1)] and more"),
    ("pythonic", "[f(a=1), 3]"),
    ("pythonic", "[f(a=1"),
    ("phi4_mini_json", 'functools[{"name": "a", "arguments": {}}'),  # unclosed
    ("phi4_mini_json", "functools[]"),
    ("phi4_mini_json", 'functools[{"arguments": {}}]'),
    ("phi4_mini_json", 'functools[{"name": "a", "arguments": {}}] trailing'),
    ("phi4_mini_json", "import functools; functools.reduce(f, xs)"),
    ("mistral", '[TOOL_CALLS][{"name": "a", "arguments": {}}'),
    ("mistral", "[TOOL_CALLS]"),
    ("mistral", "[TOOL_CALLS]add"),
    ("mistral", '[TOOL_CALLS]add{"a": 1} then text'),
    ("mistral", '[TOOL_CALLS][{"name": "a"}]'),  # arguments required
]

_OPENAI_ID = re.compile(r"call_[0-9a-f]{24}")
_MISTRAL_ID = re.compile(r"[A-Za-z0-9]{9}")


def _calls(tool_calls: Sequence[dict[str, Any]]) -> Calls:
    return [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in tool_calls]


def _stream(name: str, chunks: Sequence[str], hold: Sequence[str] = ()) -> tuple[str, str, Any]:
    """(content streamed while pushing, content at finish, parsed) for a chunked completion."""
    flt = ToolCallStreamFilter(get_tool_parser(name), hold)
    pushed = "".join(flt.push(c) for c in chunks)
    tail, parsed = flt.finish()
    return pushed, tail, parsed


def _split_points(text: str) -> list[list[str]]:
    """The text in two chunks at every split point, plus one character at a time."""
    return [[text[:k], text[k:]] for k in range(len(text) + 1)] + [list(text)]


# ----------------------------------------------------------------------------- complete


@pytest.mark.parametrize(("name", "text", "content", "calls"), WELL_FORMED)
def test_parser_reads_calls_and_content(
    name: str, text: str, content: str | None, calls: Calls
) -> None:
    parsed = get_tool_parser(name).parse(text)
    assert parsed is not None
    assert parsed.content == content
    assert _calls(parsed.tool_calls) == calls
    ids = [c["id"] for c in parsed.tool_calls]
    pattern = _MISTRAL_ID if name == "mistral" else _OPENAI_ID
    assert all(pattern.fullmatch(i) for i in ids) and len(set(ids)) == len(ids)
    assert all(c["type"] == "function" for c in parsed.tool_calls)


@pytest.mark.parametrize(("name", "text"), MALFORMED)
def test_malformed_call_text_is_plain_content(name: str, text: str) -> None:
    assert get_tool_parser(name).parse(text) is None


def test_pythonic_never_evaluates(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    def refuse(*_: object) -> None:
        raise AssertionError("eval called")

    monkeypatch.setattr(builtins, "eval", refuse)
    parsed = get_tool_parser("pythonic").parse("[f(a='x')]")
    assert parsed is not None and _calls(parsed.tool_calls) == [("f", {"a": "x"})]


# ----------------------------------------------------------------------------- streaming


@pytest.mark.parametrize(("name", "text", "content", "calls"), WELL_FORMED)
def test_stream_matches_the_complete_parse_at_every_split(
    name: str, text: str, content: str | None, calls: Calls
) -> None:
    parser = get_tool_parser(name)
    start = find_call_start(parser, text)
    assert start is not None and parser.parse(text) is not None
    assert parser.parse(text).start == start  # type: ignore[union-attr]
    for chunks in _split_points(text):
        pushed, tail, parsed = _stream(name, chunks)
        assert parsed is not None and _calls(parsed.tool_calls) == calls
        # nothing from the call's start on is streamed before the end
        assert pushed == text[: len(pushed)] and len(pushed) <= start
        assert ((pushed + tail).strip() or None) == content


@pytest.mark.parametrize(("name", "text"), MALFORMED)
def test_stream_of_malformed_text_is_all_content(name: str, text: str) -> None:
    for chunks in _split_points(text):
        pushed, tail, parsed = _stream(name, chunks)
        assert parsed is None and pushed + tail == text


def test_stream_releases_content_as_soon_as_no_marker_can_follow() -> None:
    flt = ToolCallStreamFilter(get_tool_parser("hermes"))
    assert flt.push("Sure <tool") == "Sure "  # "<tool" may open a call: held
    assert flt.push("s are fun") == "<tools are fun"
    flt = ToolCallStreamFilter(get_tool_parser("llama3_json"))
    assert flt.push("  ") == ""  # a "{" may still open a call
    assert flt.push("Hi {") == "  Hi {"  # mid-text "{" does not
    flt = ToolCallStreamFilter(get_tool_parser("pythonic"))
    assert flt.push("The list [1]") == "The list [1]"


def test_stream_holds_hidden_markers() -> None:
    """A marker the client would not see (a special token) is never streamed as content."""
    text = "a </tool_call> b"
    for chunks in _split_points(text):
        pushed, tail, parsed = _stream("hermes", chunks, hold=["</tool_call>"])
        assert parsed is None and pushed == text[: len(pushed)] and len(pushed) <= 2
        assert pushed + tail == text


# ----------------------------------------------------------------------------- registry


def test_registry_names_match_vllm() -> None:
    assert set(TOOL_PARSER_NAMES) == {
        "hermes",
        "llama3_json",
        "mistral",
        "phi4_mini_json",
        "pythonic",
    }
    assert all(get_tool_parser(n).name == n for n in TOOL_PARSER_NAMES)


def test_unknown_parser_names_the_valid_ones() -> None:
    with pytest.raises(UnknownToolParserError) as err:
        get_tool_parser("llama3")
    message = str(err.value)
    assert "'llama3'" in message and all(n in message for n in TOOL_PARSER_NAMES)
    assert "\n" not in message


@pytest.mark.parametrize(
    ("model_type", "parser"),
    [
        ("qwen2", "hermes"),
        ("qwen3", "hermes"),
        ("qwen2_moe", "hermes"),
        ("llama", "llama3_json"),
        ("gemma", None),
        ("gemma2", None),
        ("gemma3", None),
        ("gemma3_text", None),
        ("phi3", None),
        ("an_unknown_family", None),
    ],
)
def test_family_defaults(model_type: str, parser: str | None) -> None:
    assert default_tool_parser(model_type) == parser
    assert parser is None or parser in TOOL_PARSER_NAMES


def test_a_template_call_markup_overrides_the_model_type() -> None:
    # fulmen's own models are model_type "llama" with Hermes calls in their template
    template = build_tokenizer().chat_template
    assert isinstance(template, str)
    assert default_tool_parser("llama", template) == "hermes"
    assert default_tool_parser("phi3", "... functools[ ... ") == "phi4_mini_json"
    assert default_tool_parser("mistral", "{{ '[TOOL_CALLS]' }}") == "mistral"
    assert default_tool_parser("llama", "{{ '<|python_tag|>' }}") == "llama3_json"
    assert default_tool_parser("qwen2", "no call markup") == "hermes"  # falls back
    assert default_tool_parser("gemma3", "no call markup") is None


# ----------------------------------------------------------------------------- templates


def test_template_probe() -> None:
    tokenizer = build_tokenizer()  # ChatML with a tools line
    assert template_supports_tools(tokenizer)
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
        "{% endfor %}<|im_start|>assistant\n"
    )  # ignores tools, like Gemma's
    assert not template_supports_tools(tokenizer)
    tokenizer.chat_template = "{{ raise_exception('no tools here') }}"
    assert not template_supports_tools(tokenizer)
    tokenizer.chat_template = None
    assert not template_supports_tools(tokenizer)


# ----------------------------------------------------------------------------- special tokens


@pytest.fixture(scope="module")
def special_tokenizer() -> PreTrainedTokenizerFast:
    """The reference tokenizer plus ``<|python_tag|>`` and ``[TOOL_CALLS]`` as special tokens."""
    tokenizer = build_tokenizer()
    tokenizer.add_tokens(["<|python_tag|>", "[TOOL_CALLS]"], special_tokens=True)
    return tokenizer


def _engine_events(
    tokenizer: PreTrainedTokenizerFast, ids: list[int], stop: Sequence[str] = ()
) -> list[TokenEvent]:
    """The events the engine emits for ``ids`` (special tokens skipped), ending at EOS."""
    eos = tokenizer.eos_token_id
    assert isinstance(eos, int)
    stream = TextStream(make_decoder(tokenizer), stop)
    events: list[TokenEvent] = []
    for tid in ids:
        text = stream.push(tid)
        finish = "stop" if stream.stopped is not None else None
        reason = stream.stopped
        events.append(TokenEvent(0, tid, -1.0, (), text, finish, reason, 0))
        if finish:
            return events
    events.append(TokenEvent(0, eos, -1.0, (), stream.finish(), "stop", None, 0))
    return events


def _finished(events: list[TokenEvent]) -> SequenceOutput:
    last = events[-1]
    assert last.finish_reason is not None
    return SequenceOutput(
        index=0,
        token_ids=tuple(e.token_id for e in events if e.token_id is not None),
        logprobs=tuple(-1.0 for _ in events),
        top_logprobs=tuple(() for _ in events),
        text="".join(e.text for e in events),
        finish_reason=last.finish_reason,
        stop_reason=last.stop_reason,
    )


def test_markers_kept_only_where_they_are_special(
    special_tokenizer: PreTrainedTokenizerFast,
) -> None:
    hermes = ToolCallDecoding(get_tool_parser("hermes"), special_tokenizer)
    assert hermes.hidden_markers == ()  # <tool_call> is a plain added token here
    llama = ToolCallDecoding(get_tool_parser("llama3_json"), special_tokenizer)
    assert llama.hidden_markers == ("<|python_tag|>",)
    plain = ToolCallDecoding(get_tool_parser("llama3_json"), build_tokenizer())
    assert plain.hidden_markers == ()


@pytest.mark.parametrize(
    ("name", "text", "stop", "calls", "client_text"),
    [
        (
            "llama3_json",
            'Ok.<|python_tag|>{"name": "calc", "parameters": {"x": "3*4"}}',
            (),
            [("calc", {"x": "3*4"})],
            "Ok.",
        ),
        (
            "mistral",
            '[TOOL_CALLS][{"name": "calc", "arguments": {"x": 1}}]',
            (),
            [("calc", {"x": 1})],
            None,
        ),
        # cut by a stop string: malformed, so the client gets the plain text (no tag), as from
        # vLLM, which skips special tokens for this parser
        (
            "llama3_json",
            'Ok.<|python_tag|>{"name": "calc", "parameters": {"x": "3*4"}}',
            ("*",),
            None,
            'Ok.{"name": "calc", "parameters": {"x": "3',
        ),
        ("llama3_json", "Just <|python_tag|> text", (), None, "Just  text"),
    ],
)
def test_special_marker_tokens_reach_the_parser(
    special_tokenizer: PreTrainedTokenizerFast,
    name: str,
    text: str,
    stop: tuple[str, ...],
    calls: Calls | None,
    client_text: str | None,
) -> None:
    decoding = ToolCallDecoding(get_tool_parser(name), special_tokenizer)
    ids = list(special_tokenizer(text, add_special_tokens=False)["input_ids"])
    assert len(ids) < len(text)  # the marker is one (special) token
    events = _engine_events(special_tokenizer, ids, stop)
    out = _finished(events)
    assert not any(m in out.text for m in decoding.hidden_markers)  # the engine hides them

    parsed = decoding.parse(out, stop)
    streamer = decoding.stream(stop)
    fed = [streamer.feed(e) for e in events]
    streamed = "".join(content for content, _ in fed)
    streamed_calls = fed[-1][1]
    if calls is None:
        assert parsed is None and streamed_calls is None
        assert out.text == client_text and streamed == client_text
    else:
        assert parsed is not None and streamed_calls is not None
        assert _calls(parsed.tool_calls) == calls == _calls(streamed_calls.tool_calls)
        assert parsed.content == client_text and (streamed.strip() or None) == client_text
