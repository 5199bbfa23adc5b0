"""Gateway errors and their OpenAI-style bodies ``{"error": {message, type, param, code}}``.

Imports nothing heavy, so :class:`fulmen.gateway.RemoteGateway` users can catch
:class:`GatewayError` without loading aiohttp.
"""

from __future__ import annotations

from typing import Any

from fulmen.errors import FulmenError

__all__ = ["ERROR_TYPES", "GatewayError", "error_body"]

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    500: "internal_error",
    502: "upstream_error",
    504: "upstream_timeout_error",
}
"""OpenAI-style ``type`` for each HTTP status the gateway itself sends."""


def error_body(
    message: str, *, status: int, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """The JSON body of an error response, in the shape OpenAI clients parse."""
    return {
        "error": {
            "message": message,
            "type": ERROR_TYPES.get(status, "invalid_request_error"),
            "param": param,
            "code": code,
        }
    }


class GatewayError(FulmenError, RuntimeError):
    """A request the gateway refused or could not complete.

    Raised by the in-process :class:`~fulmen.gateway.Gateway` control methods and by
    :class:`~fulmen.gateway.RemoteGateway` (with the HTTP status the gateway answered, or
    ``status=0`` when the gateway could not be reached). The message says what was wrong and
    how to fix it.

    Attributes:
        status: HTTP status (400 bad input, 401 auth, 404 unknown episode, 409 finished
            episode, 413 body too large, 502/504 upstream failure; 0 unreachable).
        code: Short machine-readable reason, e.g. ``episode_finished``.
        param: The request field at fault, when there is one.
    """

    def __init__(
        self, message: str, *, status: int, code: str | None = None, param: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.param = param

    def body(self) -> dict[str, Any]:
        """This error as an OpenAI-style JSON body."""
        return error_body(self.message, status=self.status, code=self.code, param=self.param)
