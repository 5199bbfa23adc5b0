"""The double's responses: its :class:`~.generation.Generation` objects written in vLLM's format.

How a body, chunk or logprob looks is :mod:`fulmen.wire`'s (shared with the embedded inference
server); this module decides what the double puts in them: the toy tokenizer's token texts,
Hermes-style tool calls parsed from the generated text, and a token-by-token stream whose tool
call deltas grow as vLLM's Hermes parser emits them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fulmen import wire

from fulmen_testkit.vllm_double.generation import (
    Generation,
    RequestParams,
    ToolCallView,
    parse_tool_calls,
    stream_tool_view,
    tool_call_id,
)
from fulmen_testkit.vllm_double.tokenizer import ToyTokenizer

__all__ = [
    "FINGERPRINT",
    "ChatStreamState",
    "chat_choice",
    "chat_stream_chunks",
    "completion_choice",
    "completion_stream_chunks",
    "omit_token_ids",
]

FINGERPRINT = "vllm-0.32.0-double"
"""``system_fingerprint`` of every response (vLLM writes its version and a hash)."""


def _top(tok: ToyTokenizer, gen: Generation, position: int, count: int) -> wire.TopLogprobs:
    return [(tok.token_text(i), lp) for i, lp in gen.top(position, count)]


def _chat_logprobs(
    tok: ToyTokenizer, gen: Generation, top: int, start: int, stop: int
) -> list[dict[str, Any]]:
    return [
        wire.chat_logprob(tok.token_text(gen.token_ids[k]), gen.logprobs[k], _top(tok, gen, k, top))
        for k in range(start, stop)
    ]


def _completion_logprobs(
    tok: ToyTokenizer, gen: Generation, top: int, start: int, stop: int, offset: int
) -> dict[str, Any]:
    positions = range(start, stop)
    return wire.completion_logprobs(
        [tok.token_text(gen.token_ids[k]) for k in positions],
        gen.logprobs[start:stop],
        [_top(tok, gen, k, top) for k in positions],
        offset=offset,
    )


def _finish(gen: Generation, has_calls: bool) -> str:
    return "tool_calls" if has_calls and gen.finish_reason == "stop" else gen.finish_reason


def chat_choice(
    tok: ToyTokenizer,
    gen: Generation,
    params: RequestParams,
    *,
    tools_active: bool,
    logprobs_top: int | None,
    token_ids: bool,
) -> dict[str, Any]:
    """One non-streaming chat choice (``logprobs_top`` None: no logprobs requested)."""
    content, calls = parse_tool_calls(gen.text) if tools_active else (gen.text, [])
    tool_calls = [
        wire.tool_call(tool_call_id(params, k), name, arguments)
        for k, (name, arguments) in enumerate(calls)
    ]
    logprobs = None
    if logprobs_top is not None:
        logprobs = _chat_logprobs(tok, gen, logprobs_top, 0, len(gen.token_ids))
    return wire.chat_choice(
        params.choice_index,
        gen,
        wire.chat_message(content, tool_calls),
        logprobs=logprobs,
        return_token_ids=token_ids,
        finish_reason=_finish(gen, bool(calls)),
    )


def completion_choice(
    tok: ToyTokenizer,
    gen: Generation,
    index: int,
    prompt_ids: list[int],
    *,
    logprobs_top: int | None,
    token_ids: bool,
) -> dict[str, Any]:
    """One non-streaming ``/v1/completions`` choice (ids per choice, prompt ids included)."""
    logprobs = None
    if logprobs_top is not None:
        logprobs = _completion_logprobs(tok, gen, logprobs_top, 0, len(gen.token_ids), 0)
    return wire.completion_choice(
        index, gen, logprobs=logprobs, prompt_token_ids=prompt_ids, return_token_ids=token_ids
    )


@dataclass(slots=True)
class ChatStreamState:
    """Streams one chat choice token by token, as vLLM's Hermes tool parser would.

    Each :meth:`delta` returns the ``delta`` object for the next token: content text, a new tool
    call's name (with its id), an arguments fragment, or ``{}`` when the token adds nothing
    visible (inside ``<tool_call>`` before the name is complete, the closing tag, the end
    token).
    """

    tok: ToyTokenizer
    gen: Generation
    params: RequestParams
    tools_active: bool
    _texts: list[str] = field(default_factory=list[str])
    _content: str = ""
    _names: list[bool] = field(default_factory=list[bool])
    _args: list[str] = field(default_factory=list[str])
    _prefix: str = ""
    _has_calls: bool = False

    def __post_init__(self) -> None:
        self._texts = self.tok.stream_decode(self.gen.token_ids)
        if self.tools_active:
            self._has_calls = bool(parse_tool_calls(self.gen.text)[1])

    @property
    def finish_reason(self) -> str:
        """``finish_reason`` of the choice's last chunk."""
        return _finish(self.gen, self._has_calls)

    def delta(self, k: int) -> dict[str, Any]:
        """The ``delta`` of token ``k`` (call for k = 0, 1, 2... in order)."""
        self._prefix += self._texts[k]
        if not self.tools_active:
            return {"content": self._texts[k]}
        content, views = stream_tool_view(self._prefix)
        if len(content) > len(self._content):
            new, self._content = content[len(self._content) :], content
            return {"content": new}
        last = k == len(self._texts) - 1
        calls = self._tool_deltas(views, flush=last)
        return {"content": None, "tool_calls": calls} if calls else {}

    def _tool_deltas(self, views: list[ToolCallView], *, flush: bool) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for index, view in enumerate(views):
            if index == len(self._names):
                self._names.append(False)
                self._args.append("")
            if view.name is None:
                continue
            if not self._names[index]:
                self._names[index] = True
                arguments = view.arguments if flush and view.arguments else None
                if arguments is not None:
                    self._args[index] = arguments
                call_id = tool_call_id(self.params, index)
                out.append(
                    wire.tool_call_delta(
                        index, call_id=call_id, name=view.name, arguments=arguments
                    )
                )
            elif len(view.arguments) > len(self._args[index]):
                new = view.arguments[len(self._args[index]) :]
                self._args[index] = view.arguments
                out.append(wire.tool_call_delta(index, arguments=new))
            if out and not flush:
                break
        return out


def chat_stream_chunks(
    tok: ToyTokenizer,
    envelope: wire.Envelope,
    prompt_ids: list[int],
    gens: Sequence[tuple[Generation, RequestParams]],
    *,
    tools_active: bool,
    top: int | None,
    want_ids: bool,
    include_usage: bool,
) -> list[dict[str, Any]]:
    """Every chunk of a streamed chat response, one token per chunk, choices interleaved.

    A token whose delta is empty is sent only as vLLM sends it (:func:`fulmen.wire.sends_chat_chunk`).
    """
    states = [ChatStreamState(tok, g, p, tools_active) for g, p in gens]
    first_ids = prompt_ids if want_ids else None
    chunks = [envelope.role_chunk(i, first_ids) for i in range(len(gens))]
    choices: list[dict[str, Any]] = []
    longest = max(len(g.token_ids) for g, _ in gens)
    for k in range(longest):
        for i, (gen, _) in enumerate(gens):
            if k >= len(gen.token_ids):
                continue
            finish = states[i].finish_reason if k == len(gen.token_ids) - 1 else None
            delta = states[i].delta(k)
            if not wire.sends_chat_chunk(delta, finish, want_ids):
                continue
            choices.append(
                wire.chat_chunk_choice(
                    i,
                    delta,
                    logprobs=None if top is None else _chat_logprobs(tok, gen, top, k, k + 1),
                    finish_reason=finish,
                    stop_reason=gen.stop_reason,
                    token_ids=[gen.token_ids[k]] if want_ids else None,
                )
            )
    last = len(choices) - 1
    for j, choice in enumerate(choices):
        chunks.append(envelope.chat_chunk(choice, final=j == last and not include_usage))
    if include_usage:
        completion_tokens = sum(len(g.token_ids) for g, _ in gens)
        chunks.append(envelope.chat_usage_chunk(len(prompt_ids), completion_tokens))
    return chunks


def completion_stream_chunks(
    tok: ToyTokenizer,
    envelope: wire.Envelope,
    runs: Sequence[tuple[int, list[int], Generation]],
    *,
    top: int | None,
    want_ids: bool,
    include_usage: bool,
) -> list[dict[str, Any]]:
    """Every chunk of a streamed ``/v1/completions`` response; ``runs`` holds
    ``(choice index, prompt ids, generation)``. Prompt ids ride on a choice's first chunk."""
    chunks: list[dict[str, Any]] = []
    for index, prompt_ids, gen in runs:
        offset = 0
        texts = tok.stream_decode(gen.token_ids)
        for k, text in enumerate(texts):
            last = k == len(texts) - 1
            logprobs = None
            if top is not None:
                logprobs = _completion_logprobs(tok, gen, top, k, k + 1, offset)
            choice = wire.completion_chunk_choice(
                index,
                text,
                logprobs=logprobs,
                finish_reason=gen.finish_reason if last else None,
                stop_reason=gen.stop_reason if last else None,
                token_ids=[gen.token_ids[k]] if want_ids else None,
                prompt_token_ids=prompt_ids if want_ids and k == 0 else None,
            )
            chunks.append(envelope.completion_chunk(choice))
            offset += len(text)
    if include_usage:
        prompt_tokens = sum(len(ids) for _, ids, _ in runs)
        completion_tokens = sum(len(g.token_ids) for _, _, g in runs)
        chunks.append(envelope.completion_usage_chunk(prompt_tokens, completion_tokens))
    return chunks


def omit_token_ids(obj: dict[str, Any]) -> None:
    """Remove every token-id field in place (a server that does not know ``return_token_ids``)."""
    obj.pop("prompt_token_ids", None)
    obj.pop("prompt_text", None)
    for choice in obj.get("choices", []):
        choice.pop("token_ids", None)
        choice.pop("prompt_token_ids", None)
