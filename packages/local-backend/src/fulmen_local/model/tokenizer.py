"""Character-level tokenizer and ChatML chat template of the reference tiny model.

Every printable ASCII character and newline/tab is one token; anything else is ``<|unk|>``.
Special tokens: ``<|pad|>`` (0), ``<|unk|>`` (1), ``<|im_start|>`` (2), ``<|im_end|>`` (3, the
end-of-turn / EOS token), ``<tool_call>`` (4) and ``</tool_call>`` (5). The two tool-call tags
are *not* special: ``decode(..., skip_special_tokens=True)`` keeps them, so a server can parse
tool calls from decoded text.

Rendering (ChatML; ``\\n`` is a newline)::

    <|im_start|>system\\n{system}\\nTools: calculator(expression)<|im_end|>\\n
    <|im_start|>user\\nWhat is 37*48?<|im_end|>\\n
    <|im_start|>assistant\\n<tool_call>{"name": "calculator", "arguments": {"expression": "37*48"}}</tool_call><|im_end|>\\n
    <|im_start|>tool\\n1776<|im_end|>\\n
    <|im_start|>assistant\\nThe answer is 1776.<|im_end|>\\n

The tools line names each tool and its parameters only (short prompts: the model reads
characters). Assistant tool calls are Hermes-style JSON between ``<tool_call>`` tags, exactly
``{"name": NAME, "arguments": ARGS}`` with ``json.dumps`` default separators; ``arguments`` may
be a dict or an OpenAI JSON string (emitted verbatim, so it renders identically to the dict when
it is ``json.dumps(dict)``, which is what OpenAI-compatible servers return).

The template is prefix-stable: the prompt of turn k+1 starts with the prompt of turn k followed
by the ids the model generated (which end with ``<|im_end|>``), provided the model's tool-call
text is the canonical JSON. Assistant output is wrapped in ``{% generation %}`` so
``return_assistant_tokens_mask=True`` marks exactly the trained tokens.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fulmen.errors import ServingError
from tokenizers import Tokenizer, decoders, models
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

__all__ = [
    "CHAT_TEMPLATE",
    "EOS_TOKEN",
    "PAD_TOKEN",
    "SPECIAL_TOKENS",
    "TOOL_CALL_END",
    "TOOL_CALL_START",
    "ToolCallParseError",
    "build_tokenizer",
    "encode_chat",
    "encode_chat_with_mask",
    "format_tool_call",
    "load_tokenizer",
    "parse_tool_calls",
]

PAD_TOKEN = "<|pad|>"
UNK_TOKEN = "<|unk|>"
IM_START = "<|im_start|>"
EOS_TOKEN = "<|im_end|>"
TOOL_CALL_START = "<tool_call>"
TOOL_CALL_END = "</tool_call>"
SPECIAL_TOKENS: tuple[str, ...] = (
    PAD_TOKEN,
    UNK_TOKEN,
    IM_START,
    EOS_TOKEN,
    TOOL_CALL_START,
    TOOL_CALL_END,
)
"""Tokens with fixed ids 0..5, in this order."""

_CHARACTERS = "\n\t" + "".join(chr(c) for c in range(32, 127))
assert set(string.printable) - {"\r", "\x0b", "\x0c"} <= set(_CHARACTERS)

# Jinja whitespace: the environment uses trim_blocks/lstrip_blocks, and every literal below is
# an expression, so newlines in this source never reach the output.
CHAT_TEMPLATE = (
    "{%- macro content(c) -%}"
    "{%- if c is none -%}{%- elif c is string -%}{{- c -}}"
    "{%- else -%}{%- for part in c -%}{%- if part.text is defined -%}{{- part.text -}}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
    "{%- if messages and messages[0].role == 'system' -%}"
    "{%- set system = content(messages[0].content) -%}{%- set rest = messages[1:] -%}"
    "{%- else -%}{%- set system = none -%}{%- set rest = messages -%}{%- endif -%}"
    "{%- if system is not none or tools -%}"
    "{{- '<|im_start|>system\\n' -}}"
    "{%- if system is not none -%}{{- system -}}{%- if tools -%}{{- '\\n' -}}{%- endif -%}{%- endif -%}"
    "{%- if tools -%}{{- 'Tools: ' -}}"
    "{%- for t in tools -%}{%- set f = t.function if t.function is defined else t -%}"
    "{%- if not loop.first -%}{{- '; ' -}}{%- endif -%}{{- f.name ~ '(' -}}"
    "{%- if f.parameters is defined and f.parameters.properties is defined -%}"
    "{{- f.parameters.properties | list | join(', ') -}}{%- endif -%}{{- ')' -}}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- for m in rest -%}"
    "{%- if m.role == 'assistant' -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- generation -%}"
    "{{- content(m.content) -}}"
    "{%- if m.tool_calls is defined and m.tool_calls -%}{%- for tc in m.tool_calls -%}"
    "{%- set f = tc.function if tc.function is defined else tc -%}"
    "{%- set args = f.arguments if f.arguments is defined else {} -%}"
    "{{- '<tool_call>{\"name\": ' ~ (f.name | tojson) ~ ', \"arguments\": ' -}}"
    "{%- if args is string -%}{{- args -}}{%- else -%}{{- args | tojson -}}{%- endif -%}"
    "{{- '}</tool_call>' -}}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>' -}}"
    "{%- endgeneration -%}"
    "{{- '\\n' -}}"
    "{%- else -%}"
    "{{- '<|im_start|>' ~ m.role ~ '\\n' -}}{{- content(m.content) -}}{{- '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)
"""Jinja chat template (ChatML with a compact tools line and Hermes-style tool calls)."""


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Build the character-level tokenizer with its chat template.

    The vocabulary is fixed (no training): 6 special tokens, newline, tab and the 95 printable
    ASCII characters, 103 ids in all. Decoding concatenates tokens without separators.
    """
    vocab: dict[str, int] = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in _CHARACTERS:
        vocab[ch] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK_TOKEN))
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        eos_token=EOS_TOKEN,
        additional_special_tokens=[IM_START],
        clean_up_tokenization_spaces=False,
        model_max_length=512,
        padding_side="right",
    )
    tokenizer.add_tokens([TOOL_CALL_START, TOOL_CALL_END])
    tokenizer.chat_template = CHAT_TEMPLATE
    ids = tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    if ids != list(range(len(SPECIAL_TOKENS))):
        raise RuntimeError(f"special token ids moved: {ids}")
    return tokenizer


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """Load a tokenizer saved with ``save_pretrained`` (via ``AutoTokenizer``).

    Raises:
        FileNotFoundError: ``path`` is not a directory holding a saved tokenizer.
    """
    directory = Path(path)
    if not (directory / "tokenizer.json").is_file():
        raise FileNotFoundError(
            f"{directory}: no tokenizer.json; build one with build_tokenizer() and save_pretrained"
        )
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        raise TypeError(f"{directory}: expected a fast tokenizer, got {type(tokenizer).__name__}")
    return tokenizer


def _as_ids(value: Any, what: str) -> list[int]:
    if isinstance(value, list) and all(isinstance(i, int) for i in value):
        return list(value)
    raise TypeError(f"apply_chat_template returned {type(value).__name__} for {what}, expected ids")


def encode_chat(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Mapping[str, Any]],
    *,
    tools: Sequence[Mapping[str, Any]] | None = None,
    add_generation_prompt: bool = True,
) -> list[int]:
    """Token ids of ``messages`` rendered by the chat template (the prompt a server would run)."""
    out = tokenizer.apply_chat_template(
        list(messages),  # pyright: ignore[reportArgumentType]
        tools=list(tools) if tools is not None else None,  # pyright: ignore[reportArgumentType]
        add_generation_prompt=add_generation_prompt,
        tokenize=True,
        return_dict=True,
    )
    return _as_ids(out["input_ids"], "input_ids")  # pyright: ignore[reportArgumentType, reportCallIssue]


def encode_chat_with_mask(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Mapping[str, Any]],
    *,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> tuple[list[int], list[int]]:
    """Ids of a whole conversation and its assistant mask (1 on tokens the model generates,
    end tokens included), from the template's ``{% generation %}`` blocks.

    Raises:
        ValueError: the template marks no assistant token (not a fulmen template, or no
            assistant message).
    """
    out = tokenizer.apply_chat_template(
        list(messages),  # pyright: ignore[reportArgumentType]
        tools=list(tools) if tools is not None else None,  # pyright: ignore[reportArgumentType]
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    ids = _as_ids(out["input_ids"], "input_ids")  # pyright: ignore[reportArgumentType, reportCallIssue]
    mask = _as_ids(out["assistant_masks"], "assistant_masks")  # pyright: ignore[reportArgumentType, reportCallIssue]
    if len(ids) != len(mask) or not any(mask):
        raise ValueError("the chat template marked no assistant token ({% generation %} missing?)")
    return ids, mask


def format_tool_call(name: str, arguments: dict[str, Any]) -> str:
    """Canonical text of one tool call, exactly as the chat template renders it."""
    payload = f'{{"name": {json.dumps(name, ensure_ascii=False)}, "arguments": '
    return f"{TOOL_CALL_START}{payload}{json.dumps(arguments, ensure_ascii=False)}}}{TOOL_CALL_END}"


class ToolCallParseError(ServingError, ValueError):
    """A ``<tool_call>`` block is not JSON of the form ``{"name": str, "arguments": object}``."""


_TOOL_CALL_RE = re.compile(re.escape(TOOL_CALL_START) + r"(.*?)" + re.escape(TOOL_CALL_END), re.S)


def parse_tool_calls(text: str) -> tuple[str, list[dict[str, Any]]]:
    """Split generated text into content and Hermes-style tool calls.

    ``text`` is the decoded response without the end token. Each ``<tool_call>...</tool_call>``
    block is parsed with :func:`json.loads`; the content is the text outside the blocks,
    stripped. A block opened but never closed is treated as content (no call).

    Returns:
        ``(content, calls)`` where each call is ``{"name": str, "arguments": dict}``.

    Raises:
        ToolCallParseError: a closed block is not valid JSON, has no string ``name``, or its
            ``arguments`` is not an object.
    """
    calls: list[dict[str, Any]] = []
    for block in _TOOL_CALL_RE.findall(text):
        try:
            data = json.loads(block)
        except json.JSONDecodeError as exc:
            raise ToolCallParseError(f"tool call is not valid JSON ({exc}): {block!r}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            raise ToolCallParseError(f'tool call needs a string "name": {block!r}')
        arguments = data.get("arguments", {})
        if not isinstance(arguments, dict):
            raise ToolCallParseError(f'tool call "arguments" must be an object: {block!r}')
        calls.append({"name": data["name"], "arguments": arguments})
    content = _TOOL_CALL_RE.sub("", text).strip()
    return content, calls
