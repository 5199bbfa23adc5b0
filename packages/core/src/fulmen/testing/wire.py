"""vLLM 0.32's OpenAI wire format, as JSON-ready dicts: responses, stream chunks, errors.

Field sets, nesting and null-vs-absent follow the responses recorded from a real vLLM 0.32 server
(``shared/fixtures/vllm-0.32-cpu``); ``tests/core/test_vllm_double.py`` checks them field by
field. Values that depend on a real model (text, logprobs) come from :mod:`.generation`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fulmen.testing.generation import (
    Generation,
    RequestParams,
    ToolCallView,
    parse_tool_calls,
    stream_tool_view,
    tool_call_id,
)
from fulmen.testing.tokenizer import ToyTokenizer

__all__ = [
    "FINGERPRINT",
    "ChatStreamState",
    "chat_choice",
    "chat_logprobs",
    "chat_stream_chunks",
    "chunk_header",
    "completion_choice",
    "completion_logprobs",
    "completion_stream_chunks",
    "error_body",
    "first_chat_chunk",
    "model_list",
    "omit_token_ids",
    "usage",
]

FINGERPRINT = "vllm-0.32.0-double"
"""``system_fingerprint`` of every response (vLLM writes its version and a hash)."""


def error_body(status: int, message: str, kind: str, param: str | None = None) -> dict[str, Any]:
    """vLLM's error body: ``{"error": {message, type, param, code}}`` with the status as code."""
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


def usage(prompt_tokens: int, completion_tokens: int, *, details: bool = True) -> dict[str, Any]:
    """The ``usage`` object (the streaming usage chunk has no ``*_details``)."""
    out: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
    }
    if details:
        out["prompt_tokens_details"] = None
        out["completion_tokens_details"] = None
    return out


def _logprob_entry(tok: ToyTokenizer, token_id: int, logprob: float) -> dict[str, Any]:
    text = tok.token_text(token_id)
    return {"token": text, "logprob": logprob, "bytes": list(text.encode())}


def chat_logprobs(
    tok: ToyTokenizer, gen: Generation, top: int, start: int = 0, stop: int | None = None
) -> dict[str, Any]:
    """Chat ``logprobs`` for positions ``start:stop``: ``{"content": [{token, logprob, bytes,
    top_logprobs}]}``."""
    content: list[dict[str, Any]] = []
    end = len(gen.token_ids) if stop is None else stop
    for k in range(start, end):
        entry = _logprob_entry(tok, gen.token_ids[k], gen.logprobs[k])
        entry["top_logprobs"] = [_logprob_entry(tok, i, lp) for i, lp in gen.top(k, top)]
        content.append(entry)
    return {"content": content}


def completion_logprobs(
    tok: ToyTokenizer, gen: Generation, top: int, start: int = 0, offset: int = 0
) -> dict[str, Any]:
    """Completions ``logprobs`` from position ``start``: text_offset, token_logprobs, tokens and
    top_logprobs (the sampled token plus ``top`` alternatives, keyed by text)."""
    offsets: list[int] = []
    tokens: list[str] = []
    tops: list[dict[str, float]] = []
    for k in range(start, len(gen.token_ids)):
        text = tok.token_text(gen.token_ids[k])
        offsets.append(offset)
        offset += len(text)
        tokens.append(text)
        alts = {tok.token_text(i): lp for i, lp in gen.top(k, top)}
        tops.append({text: gen.logprobs[k], **alts})
    return {
        "text_offset": offsets,
        "token_logprobs": list(gen.logprobs[start:]),
        "tokens": tokens,
        "top_logprobs": tops,
    }


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
    message: dict[str, Any] = {
        "role": "assistant",
        "content": content,
        "refusal": None,
        "annotations": None,
        "audio": None,
        "function_call": None,
        "reasoning": None,
    }
    if calls:
        message["tool_calls"] = [
            {
                "id": tool_call_id(params, k),
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            }
            for k, (name, arguments) in enumerate(calls)
        ]
    return {
        "index": params.choice_index,
        "message": message,
        "logprobs": None if logprobs_top is None else chat_logprobs(tok, gen, logprobs_top),
        "finish_reason": _finish(gen, bool(calls)),
        "stop_reason": gen.stop_reason,
        "token_ids": list(gen.token_ids) if token_ids else None,
        "routed_experts": None,
    }


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
    return {
        "index": index,
        "text": gen.text,
        "logprobs": None if logprobs_top is None else completion_logprobs(tok, gen, logprobs_top),
        "finish_reason": gen.finish_reason,
        "stop_reason": gen.stop_reason,
        "token_ids": list(gen.token_ids) if token_ids else None,
        "prompt_logprobs": None,
        "prompt_token_ids": prompt_ids if token_ids else None,
        "routed_experts": None,
    }


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
                fn: dict[str, Any] = {"name": view.name}
                if flush and view.arguments:
                    fn["arguments"] = view.arguments
                    self._args[index] = view.arguments
                out.append(
                    {
                        "id": tool_call_id(self.params, index),
                        "type": "function",
                        "index": index,
                        "function": fn,
                    }
                )
            elif len(view.arguments) > len(self._args[index]):
                new = view.arguments[len(self._args[index]) :]
                self._args[index] = view.arguments
                out.append({"index": index, "function": {"arguments": new}})
            if out and not flush:
                break
        return out


def chunk_header(kind: str, rid: str, created: int, model: str) -> dict[str, Any]:
    """The fields every chunk starts with (``kind``: ``chat`` or ``completions``)."""
    if kind == "chat":
        return {
            "id": f"chatcmpl-{rid}",
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
        }
    return {"id": f"cmpl-{rid}", "object": "text_completion", "created": created, "model": model}


def first_chat_chunk(
    header: Mapping[str, Any], index: int, prompt_ids: list[int] | None
) -> dict[str, Any]:
    """A choice's first chunk: the role, and the prompt ids when they were asked for."""
    chunk: dict[str, Any] = {
        **header,
        "choices": [
            {
                "index": index,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": None,
                "finish_reason": None,
            }
        ],
    }
    if prompt_ids is not None:
        chunk["prompt_token_ids"] = prompt_ids
        chunk["prompt_text"] = None
    return chunk


def chat_stream_chunks(
    tok: ToyTokenizer,
    header: Mapping[str, Any],
    prompt_ids: list[int],
    gens: list[tuple[Generation, RequestParams]],
    *,
    tools_active: bool,
    top: int | None,
    want_ids: bool,
    include_usage: bool,
) -> list[dict[str, Any]]:
    """Every chunk of a streamed chat response, one token per chunk, choices interleaved.

    Each choice opens with a role chunk (carrying ``prompt_token_ids`` when asked); its last
    chunk has ``finish_reason`` and ``stop_reason``. ``system_fingerprint`` goes on the usage
    chunk with ``include_usage``, else on the very last chunk (as vLLM 0.32 does).
    """
    states = [ChatStreamState(tok, g, p, tools_active) for g, p in gens]
    first_ids = prompt_ids if want_ids else None
    chunks = [first_chat_chunk(header, i, first_ids) for i in range(len(gens))]
    longest = max(len(g.token_ids) for g, _ in gens)
    for k in range(longest):
        for i, (gen, _) in enumerate(gens):
            if k >= len(gen.token_ids):
                continue
            last = k == len(gen.token_ids) - 1
            choice: dict[str, Any] = {
                "index": i,
                "delta": states[i].delta(k),
                "logprobs": None if top is None else chat_logprobs(tok, gen, top, k, k + 1),
                "finish_reason": states[i].finish_reason if last else None,
            }
            if last:
                choice["stop_reason"] = gen.stop_reason
            if want_ids:
                choice["token_ids"] = [gen.token_ids[k]]
            chunks.append({**header, "choices": [choice]})
    if not include_usage:
        chunks[-1]["system_fingerprint"] = FINGERPRINT
    else:
        used = usage(len(prompt_ids), sum(len(g.token_ids) for g, _ in gens), details=False)
        chunks.append({**header, "choices": [], "usage": used, "system_fingerprint": FINGERPRINT})
    return chunks


def completion_stream_chunks(
    tok: ToyTokenizer,
    header: Mapping[str, Any],
    runs: list[tuple[int, list[int], Generation]],
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
                full = completion_logprobs(tok, gen, top, k, offset)
                logprobs = {key: value[:1] for key, value in full.items()}
            choice: dict[str, Any] = {
                "index": index,
                "text": text,
                "logprobs": logprobs,
                "finish_reason": gen.finish_reason if last else None,
                "stop_reason": gen.stop_reason if last else None,
            }
            if want_ids:
                choice["token_ids"] = [gen.token_ids[k]]
                if k == 0:
                    choice["prompt_token_ids"] = prompt_ids
            chunks.append({**header, "choices": [choice]})
            offset += len(text)
    if include_usage:
        prompt_tokens = sum(len(ids) for _, ids, _ in runs)
        used = usage(prompt_tokens, sum(len(g.token_ids) for _, _, g in runs), details=False)
        chunks.append({**header, "choices": [], "usage": used})
    return chunks


def model_list(model: str, max_model_len: int) -> dict[str, Any]:
    """The ``/v1/models`` body for one served model."""
    created = int(time.time())
    permission = {
        "id": f"modelperm-{uuid.uuid4().hex[:16]}", "object": "model_permission",
        "created": created, "allow_create_engine": False, "allow_sampling": True,
        "allow_logprobs": True, "allow_search_indices": False, "allow_view": True,
        "allow_fine_tuning": False, "organization": "*", "group": None, "is_blocking": False,
    }  # fmt: skip
    card = {
        "id": model, "object": "model", "created": created, "owned_by": "vllm", "root": "model",
        "parent": None, "max_model_len": max_model_len, "permission": [permission],
    }  # fmt: skip
    return {"object": "list", "data": [card]}


def omit_token_ids(obj: dict[str, Any]) -> None:
    """Remove every token-id field in place (a server that does not know ``return_token_ids``)."""
    obj.pop("prompt_token_ids", None)
    obj.pop("prompt_text", None)
    for choice in obj.get("choices", []):
        choice.pop("token_ids", None)
        choice.pop("prompt_token_ids", None)
