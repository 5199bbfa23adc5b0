"""Which tokens of a rendered conversation the model generated: the assistant-token mask.

Supervised training on a conversation needs its token ids and, for each token, whether the
model produced it (those are trained; the prompt, the user's and the tools' turns are not).
:func:`encode_chat_tokens` works for any tokenizer that has a chat template:

* a template with ``{% generation %}`` blocks (fulmen's character-level template) marks the
  assistant tokens itself (``return_assistant_tokens_mask``);
* any other template (the published ones: Qwen, Llama 3, Gemma, Phi, …) is rendered prefix by
  prefix. The tokens of assistant message ``i`` are ``render(messages[:i + 1])`` minus
  ``render(messages[:i], add_generation_prompt=True)``, up to and including the end-of-turn
  token (what the model emits before it stops; anything the template writes after it, such as
  a newline, is not trained).

The prefix rule only holds for templates that are *prefix-stable* on the conversation: the
prompt the server renders for turn ``i``, followed by that turn up to its end-of-turn token,
must be the start of the whole conversation, in text and in tokens, so that the tokens trained
on are the tokens the model sees and produces when served. When it is not (Qwen3's template
drops the empty ``<think>`` block of earlier turns; a token straddles the turn boundary; the
end-of-turn token never appears) :class:`ChatMaskError` says which message and why.

Messages are rendered the way fulmen's server renders them
(:func:`fulmen_local.server.template.normalize_messages`: tool-call ``arguments`` given as a
JSON string are parsed to an object first), and the text is tokenized without adding special
tokens. :class:`ChatTokens` keeps each token's character span in the rendered text, so callers
find text in the conversation by character position (:meth:`ChatTokens.tokens_in`) rather than
by re-encoding it, which is wrong under byte-level BPE where a string's tokens depend on what
surrounds it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fulmen.errors import BackendError
from transformers import PreTrainedTokenizerBase

from fulmen_local.server.template import normalize_messages

__all__ = ["ChatMaskError", "ChatTokens", "encode_chat_tokens", "has_generation_blocks"]

_GENERATION_BLOCK = re.compile(r"\{%-?\s*generation\s*-?%\}")


class ChatMaskError(BackendError, ValueError):
    """The assistant tokens of a conversation cannot be told apart (see the module docstring)."""


@dataclass(frozen=True, slots=True)
class ChatTokens:
    """A conversation rendered by the chat template and tokenized."""

    text: str
    """The rendered conversation."""
    input_ids: list[int]
    offsets: list[tuple[int, int]]
    """Character span ``[start, end)`` of each token in :attr:`text`."""
    mask: list[int]
    """1 on the tokens the model generates (assistant turns, end-of-turn token included)."""

    def tokens_in(self, start: int, end: int) -> range:
        """Indices of the tokens that overlap characters ``[start, end)`` of :attr:`text`
        (empty when none does)."""
        hits = [k for k, (a, b) in enumerate(self.offsets) if a < end and b > start]
        return range(hits[0], hits[-1] + 1) if hits else range(0)


def has_generation_blocks(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether the tokenizer's chat template marks assistant output with ``{% generation %}``."""
    template = getattr(tokenizer, "chat_template", None)
    return isinstance(template, str) and bool(_GENERATION_BLOCK.search(template))


def _render(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Mapping[str, Any]],
    tools: list[dict[str, Any]] | None,
    *,
    add_generation_prompt: bool,
) -> str:
    text = tokenizer.apply_chat_template(
        list(messages),  # pyright: ignore[reportArgumentType]
        tools=tools,  # pyright: ignore[reportArgumentType]
        add_generation_prompt=add_generation_prompt,
        tokenize=False,
    )
    if not isinstance(text, str):
        raise TypeError(f"apply_chat_template returned {type(text).__name__}, expected text")
    return text


def _tokenize(
    tokenizer: PreTrainedTokenizerBase, text: str
) -> tuple[list[int], list[tuple[int, int]]]:
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = [int(i) for i in encoding["input_ids"]]
    offsets = [(int(a), int(b)) for a, b in encoding["offset_mapping"]]
    return ids, offsets


def _generation_mask(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Mapping[str, Any]],
    tools: list[dict[str, Any]] | None,
    ids: list[int],
) -> list[int]:
    out = tokenizer.apply_chat_template(
        list(messages),  # pyright: ignore[reportArgumentType]
        tools=tools,  # pyright: ignore[reportArgumentType]
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    mask = out["assistant_masks"]  # pyright: ignore[reportArgumentType, reportCallIssue]
    marked = out["input_ids"]  # pyright: ignore[reportArgumentType, reportCallIssue]
    if not isinstance(mask, list) or marked != ids or len(mask) != len(ids):
        raise ChatMaskError("the template's assistant mask does not match the conversation's tokens")
    return [int(m) for m in mask]


def _prefix_mask(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Mapping[str, Any]],
    tools: list[dict[str, Any]] | None,
    text: str,
    ids: list[int],
    offsets: list[tuple[int, int]],
    end_of_turn: str,
) -> list[int]:
    mask = [0] * len(ids)
    for i, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        where = f"messages[{i}] (assistant)"
        prompt = _render(tokenizer, messages[:i], tools, add_generation_prompt=True)
        through = _render(tokenizer, messages[: i + 1], tools, add_generation_prompt=False)
        start = len(prompt)
        found = through.find(end_of_turn, start) if through.startswith(prompt) else -1
        end = found + len(end_of_turn)
        if found >= 0 and not text.startswith(through[:end]):
            raise ChatMaskError(
                f"{where}: the chat template is not prefix-stable on this conversation: it "
                "renders this turn differently once later messages follow (it rewrites earlier "
                "turns, e.g. drops their reasoning), so one sequence cannot hold what the model "
                "saw at every turn; train each assistant turn as its own conversation, or use a "
                "template with {% generation %} blocks"
            )
        if found < 0:
            what = (
                f"the end-of-turn token {end_of_turn!r} does not follow the assistant's text; "
                "pass end_of_turn= the token this template closes assistant turns with"
                if through.startswith(prompt)
                else "the prompt the model sees for this turn (rendered with the generation "
                "prompt) is not the start of the turn as rendered"
            )
            raise ChatMaskError(f"{where}: {what}")
        prompt_ids, _ = _tokenize(tokenizer, prompt)
        n = len(prompt_ids)
        last = next((k for k in range(n, len(ids)) if offsets[k][1] == end), None)
        if ids[:n] != prompt_ids or n >= len(ids) or offsets[n][0] != start or last is None:
            raise ChatMaskError(
                f"{where}: the tokens of the prompt differ from the start of the conversation's "
                "tokens (a token spans the turn boundary), so training would see other tokens "
                "than the served model; the template must end each prompt on a token boundary"
            )
        for k in range(n, last + 1):
            mask[k] = 1
    return mask


def encode_chat_tokens(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Mapping[str, Any]],
    *,
    tools: Sequence[Mapping[str, Any]] | None = None,
    end_of_turn: str | None = None,
) -> ChatTokens:
    """Render and tokenize a whole conversation, with its assistant mask and token offsets.

    Args:
        tokenizer: a tokenizer with a chat template (a fast tokenizer: offsets are needed).
        messages: OpenAI-style messages, at least one of them an assistant message.
        tools: tool schemas passed to the template.
        end_of_turn: the token that ends an assistant turn (templates without
            ``{% generation %}`` only); default the tokenizer's EOS token. Gemma (``<end_of_turn>``)
            and Phi (``<|end|>``) end turns with another token than their EOS.

    Raises:
        ChatMaskError: no assistant token is marked, or the template is not prefix-stable on
            ``messages`` (see the module docstring).
        ValueError: the tokenizer has no chat template, is not a fast tokenizer, or has no
            end-of-turn token.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the tokenizer has no chat template; set tokenizer.chat_template")
    if not tokenizer.is_fast:
        raise ValueError("character offsets need a fast tokenizer (PreTrainedTokenizerFast)")
    normalized = normalize_messages(messages)
    schemas = [dict(t) for t in tools] if tools is not None else None
    text = _render(tokenizer, normalized, schemas, add_generation_prompt=False)
    ids, offsets = _tokenize(tokenizer, text)
    if has_generation_blocks(tokenizer):
        mask = _generation_mask(tokenizer, normalized, schemas, ids)
    else:
        eot = end_of_turn if end_of_turn is not None else tokenizer.eos_token
        if not isinstance(eot, str) or not eot:
            raise ValueError("the tokenizer has no EOS token; pass end_of_turn=")
        mask = _prefix_mask(tokenizer, normalized, schemas, text, ids, offsets, eot)
    if not any(mask):
        raise ChatMaskError("no assistant token in the conversation (no assistant message?)")
    return ChatTokens(text=text, input_ids=ids, offsets=offsets, mask=mask)
