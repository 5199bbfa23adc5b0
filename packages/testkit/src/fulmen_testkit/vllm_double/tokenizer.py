"""A small, real byte-level BPE tokenizer and a ChatML chat template, for the vLLM test double.

The tokenizer is trained with the ``tokenizers`` library (imported lazily) on a fixed corpus
built into this module, so every process builds the exact same vocabulary: same text, same ids,
on every machine. Ids 0-4 are the added tokens below; the 256 byte symbols and the learned
merges follow, up to :data:`VOCAB_SIZE`.

The chat template is ChatML with Hermes-style tool calling (what Qwen2 models use), rendered
by :func:`render_chat`. It is this double's own template, not a copy of any model's.
"""

from __future__ import annotations

import codecs
import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "END_TOKEN",
    "TOOL_CALL_CLOSE",
    "TOOL_CALL_OPEN",
    "VOCAB_SIZE",
    "ToyTokenizer",
    "get_tokenizer",
    "render_chat",
]

VOCAB_SIZE = 1000
"""Target vocabulary size (added tokens + 256 bytes + merges)."""
END_TOKEN = "<|im_end|>"
"""Ends every assistant turn; the double appends its id to a response that stops naturally."""
TOOL_CALL_OPEN = "<tool_call>"
"""Opens a Hermes-style tool call (one token, kept in the decoded text like vLLM does)."""
TOOL_CALL_CLOSE = "</tool_call>"
"""Closes a Hermes-style tool call."""

_SPECIAL = ("<|endoftext|>", "<|im_start|>", END_TOKEN)
"""Added tokens dropped from decoded text (``skip_special_tokens``)."""
_ADDED = (*_SPECIAL, TOOL_CALL_OPEN, TOOL_CALL_CLOSE)

_WORD_TEXT = (
    "the agent answer is a tool call result value step plan check final number sum product "
    "what how many times plus minus divided by equals question user assistant system "
    "calculator expression search query weather city today good done error retry think first "
    "then next because so we need to compute add multiply subtract total each item price cost "
    "jumps quick brown fox lazy dog over under and or not yes no maybe true false"
)
_WORDS = _WORD_TEXT.split()


def _corpus() -> Iterator[str]:
    """The fixed training text: arithmetic questions, words, numbers, JSON tool calls, ChatML."""
    for a in range(0, 40):
        for b in range(0, 40, 3):
            yield f"What is {a} times {b}? The answer is {a * b}."
            yield f"Compute {a} plus {b}: the sum is {a + b}."
    for i in range(len(_WORDS)):
        yield " ".join(_WORDS[i:] + _WORDS[:i])
    for n in range(0, 2000, 7):
        yield f"{n} {n + 1} {n * 3} {n // 2}"
    for a in range(12):
        args = json.dumps({"expression": f"{a}*{a + 1}"})
        yield f'<tool_call>\n{{"name": "calculator", "arguments": {args}}}\n</tool_call>'
        yield f"<tool_response>\n{a * (a + 1)}\n</tool_response>"
    yield '{"type": "function", "function": {"name": "calculator", "description": "Evaluate '
    yield 'arithmetic", "parameters": {"type": "object", "properties": {"expression": {"type": '
    yield '"string"}}, "required": ["expression"]}}}'
    yield "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    yield "# Tools\n<tools>\n</tools>\nTo call a function, reply with"


def _byte_symbols() -> dict[str, int]:
    """The byte-level alphabet: printable bytes map to themselves, the rest above U+0100."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table: dict[int, str] = {b: chr(b) for b in printable}
    shift = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(0x100 + shift)
            shift += 1
    return {symbol: b for b, symbol in table.items()}


@dataclass(frozen=True, slots=True)
class ToyTokenizer:
    """A trained byte-level BPE with ChatML special tokens. Immutable and thread-safe."""

    _tok: Any
    """The ``tokenizers.Tokenizer`` (untyped third-party object)."""
    _bytes: tuple[bytes, ...]
    """Bytes of every id as it appears in decoded text (empty for special tokens)."""
    end_id: int
    """Id of :data:`END_TOKEN`."""

    @property
    def vocab_size(self) -> int:
        """Number of ids."""
        return len(self._bytes)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; added tokens written in the text become their single id."""
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def to_json(self) -> str:
        """The trained tokenizer in the ``tokenizers`` JSON format (a ``tokenizer.json``), so a
        real model (and a real vLLM serving it) can use exactly the same ids."""
        return str(self._tok.to_str())

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes ``token_id`` contributes to decoded text (b"" for special tokens)."""
        return self._bytes[token_id]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``, special tokens skipped, invalid UTF-8 replaced by U+FFFD."""
        return b"".join(self._bytes[i] for i in ids).decode("utf-8", errors="replace")

    def token_text(self, token_id: int) -> str:
        """One token's text as vLLM reports it in logprobs ("" when it is not valid UTF-8)."""
        try:
            return self._bytes[token_id].decode("utf-8")
        except UnicodeDecodeError:
            return ""

    def stream_decode(self, ids: Sequence[int]) -> list[str]:
        """Per-token text deltas whose concatenation equals :meth:`decode` of ``ids``.

        A token ending inside a multi-byte character yields "" and its bytes are carried over.
        """
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        deltas = [decoder.decode(self._bytes[i]) for i in ids]
        tail = decoder.decode(b"", final=True)
        if tail:
            if deltas:
                deltas[-1] += tail
            else:
                deltas.append(tail)
        return deltas


_lock = threading.Lock()
_cached: ToyTokenizer | None = None


def get_tokenizer() -> ToyTokenizer:
    """The double's tokenizer, trained once per process (about 0.1 s) and cached.

    Training is deterministic: the corpus and the trainer settings are fixed, so the vocabulary
    (and every id) is identical across processes and runs.
    """
    global _cached
    with _lock:
        if _cached is None:
            _cached = _train()
        return _cached


def _train() -> ToyTokenizer:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        show_progress=False,
        special_tokens=[AddedToken(t, special=t in _SPECIAL, normalized=False) for t in _ADDED],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(list(_corpus()), trainer=trainer)
    symbols = _byte_symbols()
    table: list[bytes] = []
    for token_id in range(tok.get_vocab_size(with_added_tokens=True)):
        piece: str = tok.id_to_token(token_id)
        if piece in _SPECIAL:
            table.append(b"")
        elif piece in _ADDED:
            table.append(piece.encode())
        else:
            table.append(bytes(symbols[ch] for ch in piece))
    return ToyTokenizer(_tok=tok, _bytes=tuple(table), end_id=tok.token_to_id(END_TOKEN))


# --------------------------------------------------------------------------- chat template


def _text_of(content: object) -> str:
    """Message content as text: a string, or the text parts of an OpenAI content-part list."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for part in content:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                parts.append(str(part["text"]))
        return "".join(parts)
    return json.dumps(content)


def _tools_block(tools: Sequence[Mapping[str, Any]]) -> str:
    lines = [json.dumps(tool, ensure_ascii=False) for tool in tools]
    return (
        "\n\n# Tools\n<tools>\n" + "\n".join(lines) + "\n</tools>\n"
        "To call a function, reply with <tool_call>\n"
        '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
    )


def _render_tool_call(call: Mapping[str, Any]) -> str:
    function = call.get("function") or {}
    raw = function.get("arguments", "{}")
    try:
        arguments = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        arguments = raw
    body = json.dumps({"name": function.get("name"), "arguments": arguments}, ensure_ascii=False)
    return f"{TOOL_CALL_OPEN}\n{body}\n{TOOL_CALL_CLOSE}"


def render_chat(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] = (),
    *,
    add_generation_prompt: bool = True,
) -> str:
    """Render OpenAI chat messages as ChatML text (Hermes-style tools), ready to encode.

    Tools go into the system message; assistant tool calls become ``<tool_call>`` blocks; tool
    results become ``<tool_response>`` blocks in a user turn. With ``add_generation_prompt``
    the text ends with an open assistant turn.
    """
    out: list[str] = []
    rest = list(messages)
    system = ""
    if rest and rest[0].get("role") == "system":
        system = _text_of(rest[0].get("content"))
        rest = rest[1:]
    if tools:
        system += _tools_block(tools)
    if system:
        out.append(f"<|im_start|>system\n{system}{END_TOKEN}\n")
    for message in rest:
        role = str(message.get("role", "user"))
        text = _text_of(message.get("content"))
        if role == "tool":
            out.append(f"<|im_start|>user\n<tool_response>\n{text}\n</tool_response>{END_TOKEN}\n")
            continue
        calls = message.get("tool_calls") or []
        if role == "assistant" and calls:
            text += "".join(_render_tool_call(call) for call in calls)
        out.append(f"<|im_start|>{role}\n{text}{END_TOKEN}\n")
    if add_generation_prompt:
        out.append("<|im_start|>assistant\n")
    return "".join(out)
