"""OpenAI/vLLM-shaped API errors: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

from typing import Any

from fulmen.errors import ServingError

__all__ = ["ApiError", "bad_request"]

_TYPES = {
    400: "BadRequestError",
    404: "NotFoundError",
    500: "InternalServerError",
    503: "ServiceUnavailableError",
}


class ApiError(ServingError):
    """An error answered to the client with ``status`` and vLLM's error body."""

    def __init__(self, status: int, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param

    def body(self) -> dict[str, Any]:
        """The JSON body, shaped like vLLM's."""
        return {
            "error": {
                "message": self.message,
                "type": _TYPES.get(self.status, "APIError"),
                "param": self.param,
                "code": self.status,
            }
        }


def bad_request(message: str, param: str | None = None) -> ApiError:
    """A 400 error naming the offending request field."""
    return ApiError(400, message, param=param)
