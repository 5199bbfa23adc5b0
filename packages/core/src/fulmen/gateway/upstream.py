"""Request shaping toward the inference server, and stripping on the way back to the agent.

Toward the upstream every generation request asks for vLLM's ``return_token_ids: true`` and
per-token logprobs (chat: ``logprobs: true, top_logprobs: 0``; completions: ``logprobs: 0``)
unless the agent already asked for them. On the way back, what the agent did not ask for is
removed again, so it sees what it asked for: token-id fields become ``null`` (non-streaming, as
vLLM itself answers without ``return_token_ids``) or are left out (stream chunks), and
``logprobs`` become ``null``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "Wants",
    "iter_sse_data",
    "shape_request",
    "strip_chunk",
    "strip_response",
    "upstream_base",
]


@dataclass(frozen=True, slots=True)
class Wants:
    """What the agent itself asked for."""

    token_ids: bool
    """``return_token_ids: true`` was in the agent's request."""
    logprobs: bool
    """The agent asked for logprobs."""

    @property
    def everything(self) -> bool:
        """True when nothing needs stripping (responses pass through unchanged)."""
        return self.token_ids and self.logprobs


def upstream_base(url: str) -> str:
    """Normalize the upstream URL: no trailing slash and no trailing ``/v1``.

    Raises:
        ValueError: not an ``http://`` or ``https://`` URL.
    """
    base = url.strip().rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise ValueError(
            f"upstream_url: expected an http:// or https:// URL of an OpenAI-compatible server "
            f"(e.g. http://127.0.0.1:8000), got {url!r}"
        )
    return base[: -len("/v1")] if base.endswith("/v1") else base


def shape_request(body: dict[str, Any], chat: bool) -> tuple[dict[str, Any], Wants]:
    """The body to send upstream (a shallow copy) and what the agent asked for."""
    wants_ids = body.get("return_token_ids") is True
    if chat:
        wants_logprobs = bool(body.get("logprobs"))
    else:
        wants_logprobs = body.get("logprobs") is not None and body.get("logprobs") is not False
    shaped = dict(body)
    shaped["return_token_ids"] = True
    if not wants_logprobs:
        if chat:
            shaped["logprobs"] = True
            shaped.setdefault("top_logprobs", 0)
        else:
            shaped["logprobs"] = 0
    return shaped, Wants(token_ids=wants_ids, logprobs=wants_logprobs)


def strip_response(response: dict[str, Any], wants: Wants) -> None:
    """Remove from a non-streaming response (in place) what the agent did not ask for."""
    if not wants.token_ids and "prompt_token_ids" in response:
        response["prompt_token_ids"] = None
    for choice in response.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        if not wants.token_ids:
            for key in ("token_ids", "prompt_token_ids"):
                if key in choice:
                    choice[key] = None
        if not wants.logprobs and "logprobs" in choice:
            choice["logprobs"] = None


def strip_chunk(chunk: dict[str, Any], wants: Wants) -> None:
    """Remove from a stream chunk (in place) what the agent did not ask for."""
    if not wants.token_ids:
        chunk.pop("prompt_token_ids", None)
    for choice in chunk.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        if not wants.token_ids:
            choice.pop("token_ids", None)
            choice.pop("prompt_token_ids", None)
        if not wants.logprobs and "logprobs" in choice:
            choice["logprobs"] = None


class _ByteChunks(Protocol):
    def iter_any(self) -> AsyncIterator[bytes]: ...


async def iter_sse_data(content: _ByteChunks) -> AsyncIterator[bytes]:
    """The ``data`` of each server-sent event, in order (multi-line data joined by ``\\n``).

    Reads raw chunks and splits on blank lines itself, so one event may be arbitrarily long
    (a first chunk with thousands of prompt ids). Comments and other fields are skipped.
    """
    buffer = bytearray()
    async for piece in content.iter_any():
        buffer += piece
        if b"\r" in buffer:
            buffer[:] = buffer.replace(b"\r\n", b"\n")
        while (end := buffer.find(b"\n\n")) >= 0:
            event = bytes(buffer[:end])
            del buffer[: end + 2]
            data = [
                line[5:].removeprefix(b" ")
                for line in event.split(b"\n")
                if line.startswith(b"data:")
            ]
            if data:
                yield b"\n".join(data)
    tail = bytes(buffer).strip()
    if tail.startswith(b"data:"):
        yield tail[5:].removeprefix(b" ")
