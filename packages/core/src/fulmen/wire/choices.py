"""vLLM's choices: logprobs, tool calls, messages, and the choices of bodies and stream chunks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

__all__ = [
    "Finished",
    "TopLogprobs",
    "chat_choice",
    "chat_chunk_choice",
    "chat_logprob",
    "chat_message",
    "completion_choice",
    "completion_chunk_choice",
    "completion_logprobs",
    "role_choice",
    "sends_chat_chunk",
    "tool_call",
    "tool_call_delta",
]

_MIN_LOGPROB = -9999.0
"""vLLM clamps logprobs here so that ``-inf`` stays valid JSON."""

TopLogprobs = Sequence[tuple[str, float]]
"""The alternatives of one position: ``(token text, logprob)``, most likely first."""


class Finished(Protocol):
    """What a finished choice must tell its non-streaming body (a server's own output type)."""

    @property
    def token_ids(self) -> Sequence[int]:
        """Generated ids, end token included when one was generated."""
        ...

    @property
    def text(self) -> str:
        """The generated text."""
        ...

    @property
    def finish_reason(self) -> str:
        """``stop``, ``length``...: why generation ended."""
        ...

    @property
    def stop_reason(self) -> str | int | None:
        """The stop string or token id that ended it (None for the end token or length)."""
        ...


# ----------------------------------------------------------------------------- logprobs


def _clamp(logprob: float) -> float:
    return max(logprob, _MIN_LOGPROB)


def _token_logprob(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": _clamp(logprob), "bytes": list(token.encode())}


def chat_logprob(token: str, logprob: float, top: TopLogprobs = ()) -> dict[str, Any]:
    """One chat ``logprobs.content[]`` entry: ``{token, logprob, bytes, top_logprobs}``."""
    entry = _token_logprob(token, logprob)
    entry["top_logprobs"] = [_token_logprob(text, lp) for text, lp in top]
    return entry


def completion_logprobs(
    tokens: Sequence[str],
    logprobs: Sequence[float],
    tops: Sequence[TopLogprobs],
    *,
    offset: int = 0,
) -> dict[str, Any]:
    """The ``/v1/completions`` ``logprobs`` object of consecutive tokens.

    ``text_offset`` counts characters from ``offset`` (the text already sent, when streaming);
    each ``top_logprobs`` map holds the sampled token first, then its alternatives by text (an
    alternative with the sampled token's text does not replace it).
    """
    offsets: list[int] = []
    top_maps: list[dict[str, float]] = []
    for token, logprob, top in zip(tokens, logprobs, tops, strict=True):
        offsets.append(offset)
        offset += len(token)
        entry = {token: _clamp(logprob)}
        for text, lp in top:
            entry.setdefault(text, _clamp(lp))
        top_maps.append(entry)
    return {
        "text_offset": offsets,
        "token_logprobs": [_clamp(lp) for lp in logprobs],
        "tokens": list(tokens),
        "top_logprobs": top_maps,
    }


# ----------------------------------------------------------------------------- choices


def tool_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    """A ``message.tool_calls[]`` entry (``arguments``: a JSON string)."""
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def tool_call_delta(
    index: int,
    *,
    call_id: str | None = None,
    name: str | None = None,
    arguments: str | None = None,
) -> dict[str, Any]:
    """A ``delta.tool_calls[]`` entry: a call's first delta has its id (and ``type``), later
    ones only ``index`` and an ``arguments`` fragment; absent parts are left out."""
    out: dict[str, Any] = {"id": call_id, "type": "function"} if call_id is not None else {}
    out["index"] = index
    function: dict[str, str] = {}
    if name is not None:
        function["name"] = name
    if arguments is not None:
        function["arguments"] = arguments
    out["function"] = function
    return out


def chat_message(
    content: str | None, tool_calls: Sequence[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    """The assistant ``message`` of a non-streaming chat choice (``tool_calls`` only when
    there are calls)."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": content,
        "refusal": None,
        "annotations": None,
        "audio": None,
        "function_call": None,
    }
    if tool_calls:
        message["tool_calls"] = [dict(call) for call in tool_calls]
    message["reasoning"] = None
    return message


def chat_choice(
    index: int,
    out: Finished,
    message: Mapping[str, Any],
    *,
    logprobs: Sequence[Mapping[str, Any]] | None,
    return_token_ids: bool,
    finish_reason: str | None = None,
) -> dict[str, Any]:
    """One non-streaming chat choice of ``out``. ``logprobs``: the :func:`chat_logprob` entries
    (None when not asked for); ``finish_reason`` overrides ``out``'s (``tool_calls``)."""
    return {
        "index": index,
        "message": dict(message),
        "logprobs": None if logprobs is None else {"content": [dict(e) for e in logprobs]},
        "finish_reason": finish_reason or out.finish_reason,
        "stop_reason": out.stop_reason,
        "token_ids": list(out.token_ids) if return_token_ids else None,
        "routed_experts": None,
    }


def completion_choice(
    index: int,
    out: Finished,
    *,
    logprobs: Mapping[str, Any] | None,
    prompt_token_ids: Sequence[int],
    return_token_ids: bool,
) -> dict[str, Any]:
    """One non-streaming ``/v1/completions`` choice of ``out`` (the ids only under
    ``return_token_ids``)."""
    return {
        "index": index,
        "text": out.text,
        "logprobs": None if logprobs is None else dict(logprobs),
        "finish_reason": out.finish_reason,
        "stop_reason": out.stop_reason,
        "token_ids": list(out.token_ids) if return_token_ids else None,
        "prompt_logprobs": None,
        "prompt_token_ids": list(prompt_token_ids) if return_token_ids else None,
        "routed_experts": None,
    }


def role_choice(index: int) -> dict[str, Any]:
    """The choice of a streamed chat choice's first chunk (the assistant role, no text)."""
    return {
        "index": index,
        "delta": {"role": "assistant", "content": ""},
        "logprobs": None,
        "finish_reason": None,
    }


def sends_chat_chunk(delta: Mapping[str, Any], finish_reason: str | None, token_ids: bool) -> bool:
    """vLLM's rule for a token whose delta is empty (a tool parser holding text back): its chunk
    is sent only when it finishes the choice or the request asked for ``return_token_ids``."""
    return bool(delta) or finish_reason is not None or token_ids


def chat_chunk_choice(
    index: int,
    delta: Mapping[str, Any],
    *,
    logprobs: Sequence[Mapping[str, Any]] | None,
    finish_reason: str | None,
    stop_reason: str | int | None,
    token_ids: Sequence[int] | None,
) -> dict[str, Any]:
    """The choice of one streamed chat token chunk. ``stop_reason`` is written only on the
    finishing chunk, ``token_ids`` only when asked for (pass None otherwise)."""
    choice: dict[str, Any] = {
        "index": index,
        "delta": dict(delta),
        "logprobs": None if logprobs is None else {"content": [dict(e) for e in logprobs]},
        "finish_reason": finish_reason,
    }
    if finish_reason is not None:
        choice["stop_reason"] = stop_reason
    if token_ids is not None:
        choice["token_ids"] = list(token_ids)
    return choice


def completion_chunk_choice(
    index: int,
    text: str,
    *,
    logprobs: Mapping[str, Any] | None,
    finish_reason: str | None,
    stop_reason: str | int | None,
    token_ids: Sequence[int] | None,
    prompt_token_ids: Sequence[int] | None,
) -> dict[str, Any]:
    """The choice of one streamed ``/v1/completions`` chunk. ``stop_reason`` is on every
    chunk (null until the end); ``token_ids`` when asked for, ``prompt_token_ids`` on a
    choice's first chunk when asked for (pass None otherwise)."""
    choice: dict[str, Any] = {
        "index": index,
        "text": text,
        "logprobs": None if logprobs is None else dict(logprobs),
        "finish_reason": finish_reason,
        "stop_reason": stop_reason,
    }
    if token_ids is not None:
        choice["token_ids"] = list(token_ids)
    if prompt_token_ids is not None:
        choice["prompt_token_ids"] = list(prompt_token_ids)
    return choice
