"""Framing of vLLM's responses: JSON spelling, SSE events, headers, error bodies, usage, models."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from typing import Any

__all__ = [
    "ERROR_TYPES",
    "POLICY_VERSION_HEADER",
    "SSE_CONTENT_TYPE",
    "SSE_DONE",
    "dumps",
    "error_body",
    "model_list",
    "sse_event",
    "usage",
]

POLICY_VERSION_HEADER = "X-Fulmen-Policy-Version"
"""Response header naming the policy version whose weights produced the response."""

SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"
"""``Content-Type`` of a streamed response (vLLM's, as starlette writes it)."""

SSE_DONE = b"data: [DONE]\n\n"
"""The event that ends every stream."""

ERROR_TYPES: Mapping[int, str] = {
    400: "BadRequestError",
    404: "NotFoundError",
    500: "InternalServerError",
    503: "ServiceUnavailableError",
}
"""vLLM's error ``type`` per HTTP status; any other status is ``APIError``."""


def dumps(obj: object) -> str:
    """Compact JSON without ASCII escapes, as vLLM writes its bodies and chunks."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def sse_event(data: object) -> bytes:
    """One server-sent event ``data: ...`` and its blank line (a ``str`` is sent verbatim,
    anything else as :func:`dumps` JSON)."""
    payload = data if isinstance(data, str) else dumps(data)
    return f"data: {payload}\n\n".encode()


def error_body(status: int, message: str, *, param: str | None = None) -> dict[str, Any]:
    """vLLM's error body ``{"error": {message, type, param, code}}``; ``code`` is the status."""
    kind = ERROR_TYPES.get(status, "APIError")
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


def usage(prompt_tokens: int, completion_tokens: int, *, details: bool = True) -> dict[str, Any]:
    """The ``usage`` object; ``details`` adds the null ``*_details`` fields of a full body (a
    stream's usage chunk has none)."""
    out: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
    }
    if details:
        out["prompt_tokens_details"] = None
        out["completion_tokens_details"] = None
    return out


def model_list(
    model: str, max_model_len: int, *, root: str, owned_by: str = "vllm"
) -> dict[str, Any]:
    """The ``/v1/models`` body for one served model (vLLM's ``root`` is the weights' path)."""
    created = int(time.time())
    permission = {
        "id": f"modelperm-{uuid.uuid4().hex[:16]}", "object": "model_permission",
        "created": created, "allow_create_engine": False, "allow_sampling": True,
        "allow_logprobs": True, "allow_search_indices": False, "allow_view": True,
        "allow_fine_tuning": False, "organization": "*", "group": None, "is_blocking": False,
    }  # fmt: skip
    card = {
        "id": model, "object": "model", "created": created, "owned_by": owned_by, "root": root,
        "parent": None, "max_model_len": max_model_len, "permission": [permission],
    }  # fmt: skip
    return {"object": "list", "data": [card]}
