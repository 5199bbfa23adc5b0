"""API errors answered with vLLM's error body (shape from :func:`fulmen.wire.error_body`)."""

from __future__ import annotations

from typing import Any

from fulmen import wire
from fulmen.errors import ServingError

__all__ = ["ApiError", "bad_request"]


class ApiError(ServingError):
    """An error answered to the client with ``status`` and vLLM's error body."""

    def __init__(self, status: int, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param

    def body(self) -> dict[str, Any]:
        """The JSON body ``{"error": {message, type, param, code}}``, as vLLM writes it."""
        return wire.error_body(self.status, self.message, param=self.param)


def bad_request(message: str, param: str | None = None) -> ApiError:
    """A 400 error naming the offending request field."""
    return ApiError(400, message, param=param)
