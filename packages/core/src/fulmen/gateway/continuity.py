"""Exact-continuity mode: a call that extends an earlier one is served token-in/token-out.

Across tool turns a chat template re-renders the assistant's tool call differently from what
the model generated, so the next prompt never starts with the previous prompt + response ids
and merged training rows break at every tool turn. In this mode (``Gateway(continuity=True)``)
the gateway keeps, per episode and agent, the last call it served (:class:`Anchor`). A chat call
**extends** it when its messages are the anchor's messages, then the anchor's answer (the same
role, content and tool calls; arguments compared as JSON), then at least one new message, with
the same tools. Such a call is sent to the upstream's ``/v1/completions`` with a token-id
prompt: the anchor's prompt ids + its response ids + the rendering of the new messages only
(:func:`continuation_ids`), and the completion is turned back into a chat answer
(:func:`chat_response`, tool calls parsed with the server's parser from :mod:`fulmen.toolcalls`).
Served, recorded and trained tokens are one sequence. Such a call is recorded with the flag
``token_in`` (:data:`fulmen.drift.tokens.TOKEN_IN_FLAG`: the drift checks never compare it with
a full re-render) and ``metadata["continues"]`` = the request id of the call it extends.

**Rendering the new messages only.** The upstream's ``/tokenize`` (vLLM's, and the embedded
server's) renders two message lists with the chat template: ``before`` = the anchor's messages +
its answer (no generation prompt) and ``after`` = every message of the call (with the
generation prompt). When ``after`` starts with ``before``, the new messages' ids are ``after``
from just past the end token that closes the anchor's answer in ``before`` (the template's own
text after that token, e.g. ChatML's ``\\n``, belongs to the new part); the model's own response
already ends with that end token.

**When a call is served normally instead** (counted by reason in
:attr:`ContinuityStats.fallbacks`): no anchor or the messages do not extend it
(``no_anchor``/``context_change``), the anchor did not end with its end token (``open_end``:
cut by ``max_tokens`` or a stop string), ``n`` > 1 or streaming (``unsupported``), a forced
tool choice or structured output (``constrained``: the grammar lives in the chat path), or the
template renders the history differently once new messages follow (``template_change``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fulmen.toolcalls import get_tool_parser

__all__ = [
    "Anchor",
    "ContinuityStats",
    "chat_response",
    "completion_body",
    "continuation_ids",
    "extends",
]

_CHAT_ONLY = frozenset({
    "messages", "tools", "tool_choice", "parallel_tool_calls", "response_format", "stream",
    "stream_options", "logprobs", "top_logprobs", "max_completion_tokens", "chat_template",
    "chat_template_kwargs", "add_generation_prompt", "continue_final_message", "documents",
    "reasoning_effort", "include_reasoning", "functions", "function_call",
})  # fmt: skip
"""Chat request fields the completions endpoint does not take (handled or dropped)."""


@dataclass(frozen=True, slots=True)
class Anchor:
    """The last call served for one (episode, agent): what a next call may extend."""

    messages: tuple[Mapping[str, Any], ...]
    """The call's request messages."""
    tools: tuple[Mapping[str, Any], ...]
    """The tools it offered."""
    answer: Mapping[str, Any]
    """The assistant message returned (``role``, ``content``, ``tool_calls``)."""
    prompt_ids: tuple[int, ...]
    """The prompt ids it was served with."""
    response_ids: tuple[int, ...]
    """Its response ids (the end token last when it ended naturally)."""
    ended: bool
    """It ended on the model's end token (``finish_reason`` stop or tool_calls, no stop string)."""
    request_id: str
    """Its request id (for the continuing call's metadata)."""


@dataclass(slots=True)
class ContinuityStats:
    """Calls served token-in, and calls served normally by reason (module docstring)."""

    continued: int = 0
    fallbacks: dict[str, int] = field(default_factory=dict[str, int])

    def fall_back(self, reason: str) -> None:
        """Count one call served normally for ``reason``."""
        self.fallbacks[reason] = self.fallbacks.get(reason, 0) + 1


def _arguments(value: object) -> object:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _calls(message: Mapping[str, Any]) -> list[tuple[object, object]]:
    out: list[tuple[object, object]] = []
    for call in message.get("tool_calls") or ():
        function: Mapping[str, Any] = (call or {}).get("function") or {}
        out.append((function.get("name"), _arguments(function.get("arguments"))))
    return out


def _same_answer(sent: Mapping[str, Any], served: Mapping[str, Any]) -> bool:
    """The agent's copy of an assistant message says what the model answered (the same tool
    calls, arguments compared as JSON; the same content, or none kept beside tool calls)."""
    if sent.get("role") != "assistant" or _calls(sent) != _calls(served):
        return False
    content = sent.get("content") or None
    return content == (served.get("content") or None) or (content is None and bool(_calls(served)))


def extends(anchor: Anchor, messages: Sequence[Mapping[str, Any]], tools: Sequence[Any]) -> bool:
    """True when ``messages`` are the anchor's messages, its answer, then new messages, and the
    tools are the anchor's."""
    k = len(anchor.messages)
    if len(messages) <= k + 1 or tuple(tools) != anchor.tools:
        return False
    if tuple(messages[:k]) != anchor.messages:
        return False
    return _same_answer(messages[k], anchor.answer)


def continuation_ids(
    anchor: Anchor, before: Sequence[int], after: Sequence[int]
) -> tuple[int, ...] | None:
    """The prompt for the continuing call: anchor prompt + response + the new messages' ids.

    ``before`` renders the anchor's messages and answer (no generation prompt), ``after`` every
    message of the call (generation prompt). None when ``after`` does not start with ``before``
    or ``before`` holds no end token (the anchor's last response id) to cut at.
    """
    if not anchor.response_ids or tuple(after[: len(before)]) != tuple(before):
        return None
    end = anchor.response_ids[-1]
    cut = next((i for i in range(len(before) - 1, -1, -1) if before[i] == end), None)
    if cut is None:
        return None
    return (*anchor.prompt_ids, *anchor.response_ids, *after[cut + 1 :])


def completion_body(chat: Mapping[str, Any], prompt: Sequence[int]) -> dict[str, Any]:
    """The ``/v1/completions`` body equivalent to a chat body, with a token-id prompt.

    Sampling fields pass through; ``max_completion_tokens`` becomes ``max_tokens``; chat
    ``logprobs``/``top_logprobs`` become completions ``logprobs`` (always asked: the record
    needs them); special tokens are kept in the text when tools are offered (the parser must
    see the call markup, as vLLM's chat path does).
    """
    body = {k: v for k, v in chat.items() if k not in _CHAT_ONLY}
    body["prompt"] = list(prompt)
    if "max_tokens" not in body and chat.get("max_completion_tokens") is not None:
        body["max_tokens"] = chat["max_completion_tokens"]
    top = chat.get("top_logprobs")
    body["logprobs"] = top if type(top) is int and chat.get("logprobs") else 0
    body["return_token_ids"] = True
    if chat.get("tools") and chat.get("tool_choice") != "none":
        body.setdefault("skip_special_tokens", False)
    return body


def _chat_logprobs(raw: Any) -> dict[str, Any] | None:
    if not isinstance(raw, dict):
        return None
    fields_: dict[str, Any] = raw
    tokens: list[Any] = fields_.get("tokens") or []
    values: list[Any] = fields_.get("token_logprobs") or []
    tops: list[Any] = fields_.get("top_logprobs") or [None] * len(values)
    content = [
        {
            "token": token,
            "logprob": value,
            "bytes": list(token.encode()) if isinstance(token, str) else None,
            "top_logprobs": [
                {"token": t, "logprob": lp} for t, lp in (top or {}).items()
            ],
        }
        for token, value, top in zip(tokens, values, tops, strict=False)
    ]
    return {"content": content}


def chat_response(
    completion: Mapping[str, Any], request_id: str, tool_parser: str, tools_offered: bool
) -> dict[str, Any]:
    """A chat-completions response from a token-in completions response.

    Tool calls are parsed from the text with ``tool_parser`` when tools were offered (the
    answer's ``finish_reason`` becomes ``tool_calls``, as vLLM's chat path answers); logprobs
    become chat ``logprobs.content`` entries; ``prompt_token_ids`` moves to the top level.
    """
    parser = get_tool_parser(tool_parser) if tools_offered else None
    choices: list[dict[str, Any]] = []
    prompt_ids: Any = None
    raw_choices: list[Any] = completion.get("choices") or []
    for position, raw in enumerate(raw_choices):
        if not isinstance(raw, dict):
            continue
        choice: dict[str, Any] = raw
        if prompt_ids is None:
            prompt_ids = choice.get("prompt_token_ids")
        text = choice.get("text") or ""
        parsed = parser.parse(text) if parser is not None else None
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        finish = choice.get("finish_reason")
        if parsed is not None:
            message = {"role": "assistant", "content": parsed.content,
                       "tool_calls": [dict(c) for c in parsed.tool_calls]}  # fmt: skip
            finish = "tool_calls" if finish == "stop" else finish
        choices.append({
            "index": choice.get("index", position),
            "message": message,
            "logprobs": _chat_logprobs(choice.get("logprobs")),
            "finish_reason": finish,
            "stop_reason": choice.get("stop_reason"),
            "token_ids": choice.get("token_ids"),
        })  # fmt: skip
    return {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion",
        "created": completion.get("created"),
        "model": completion.get("model"),
        "choices": choices,
        "usage": completion.get("usage"),
        "prompt_token_ids": prompt_ids,
    }
