"""Reading and checking request bodies: size limit, JSON, and the generation fields the gateway
relies on. Every refusal is a :class:`GatewayError` that says what to fix."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from fulmen.gateway.errors import GatewayError

__all__ = ["check_generation", "read_json"]


def _too_large(limit: int) -> GatewayError:
    return GatewayError(
        f"request body is larger than the gateway's limit of {limit} bytes "
        "(raise Gateway(max_body_bytes=...) if such requests are expected)",
        status=413,
        code="body_too_large",
    )


async def read_json(request: web.Request, limit: int) -> dict[str, Any]:
    """The request's JSON object body.

    Raises:
        GatewayError: 413 over ``limit`` bytes; 400 not JSON or not a JSON object.
    """
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise _too_large(limit) from None
    if len(raw) > limit:
        raise _too_large(limit)
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GatewayError(
            f"request body is not valid JSON ({exc}); send a JSON object with "
            "Content-Type: application/json",
            status=400,
            code="invalid_json",
        ) from None
    if not isinstance(body, dict):
        raise GatewayError(
            f"request body must be a JSON object, got a JSON {type(body).__name__}",
            status=400,
            code="invalid_json",
        )
    return body


def _bad(message: str, param: str) -> GatewayError:
    return GatewayError(message, status=400, code="invalid_request", param=param)


def _prompts(prompt: object) -> list[Any]:
    """Completions prompts: a string, a list of strings, a list of ids or a list of id lists."""
    if isinstance(prompt, str) and prompt:
        return [prompt]
    if isinstance(prompt, list) and prompt:
        items: list[Any] = prompt
        if all(isinstance(p, int) and not isinstance(p, bool) for p in items):
            return [items]
        if all(isinstance(p, str) for p in items) or all(isinstance(p, list) and p for p in items):
            return items
    raise _bad(
        "prompt: a non-empty string, list of strings, list of token ids or list of token-id "
        "lists is required",
        "prompt",
    )


def check_generation(body: dict[str, Any], chat: bool) -> tuple[int, list[Any]]:
    """Check the fields the gateway relies on; return ``(n, prompts)``.

    Chat needs a non-empty ``messages`` list of objects with a string ``role``; completions a
    ``prompt``. ``n`` must be a positive int, ``stream`` a bool, ``tools`` a list. Everything
    else is left for the upstream to judge (its 4xx reaches the agent unchanged).

    Raises:
        GatewayError: 400 naming the field.
    """
    n = body.get("n", 1)
    if n is None:
        n = 1
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 256:
        raise _bad(f"n: expected an integer from 1 to 256, got {n!r}", "n")
    if not isinstance(body.get("stream", False), bool | None):
        raise _bad(f"stream: expected true or false, got {body.get('stream')!r}", "stream")
    if not isinstance(body.get("tools") or [], list):
        raise _bad("tools: expected a list of tool definitions", "tools")
    if not chat:
        return n, _prompts(body.get("prompt"))
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad(
            'messages: a non-empty list of chat messages is required, e.g. [{"role": "user", '
            '"content": "Hello"}]',
            "messages",
        )
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise _bad(f"messages[{i}]: expected an object with a string 'role'", "messages")
    return n, []
