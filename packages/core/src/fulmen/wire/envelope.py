"""vLLM's whole bodies and stream chunks around their choices, for one response."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fulmen.wire.choices import role_choice
from fulmen.wire.framing import usage

__all__ = ["Envelope"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    """The fields every body of one response shares, and the bodies built around choices.

    ``response_id`` is ``chatcmpl-...`` for chat and ``cmpl-...`` for completions (vLLM uses
    ``X-Request-Id`` for the part after the dash when the request has one).
    """

    response_id: str
    created: int
    """Unix time of the request."""
    model: str
    """Served model name."""
    fingerprint: str
    """``system_fingerprint`` (vLLM writes its version and a hash)."""
    trailer: Mapping[str, Any] = field(default_factory=dict[str, Any])
    """Fields appended to every generation body and chunk (not part of vLLM's format)."""

    def _body(self, kind: str, choices: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.response_id,
            "object": kind,
            "created": self.created,
            "model": self.model,
            "choices": [dict(c) for c in choices],
        }

    def _close(self, body: dict[str, Any]) -> dict[str, Any]:
        body.update(self.trailer)
        return body

    def _whole(
        self,
        kind: str,
        choices: Sequence[Mapping[str, Any]],
        usage: Mapping[str, Any],
        prompt: Mapping[str, Any],
    ) -> dict[str, Any]:
        body = self._body(kind, choices)
        body.update(service_tier=None, system_fingerprint=self.fingerprint, usage=dict(usage))
        body.update(prompt)
        body.update(kv_transfer_params=None, ec_transfer_params=None, metrics=None)
        return self._close(body)

    def chat_completion(
        self,
        choices: Sequence[Mapping[str, Any]],
        *,
        usage: Mapping[str, Any],
        prompt_token_ids: Sequence[int] | None,
    ) -> dict[str, Any]:
        """A whole non-streaming chat completion (``prompt_token_ids`` None when not asked
        for)."""
        prompt = {
            "prompt_logprobs": None,
            "prompt_token_ids": None if prompt_token_ids is None else list(prompt_token_ids),
            "prompt_text": None,
        }
        return self._whole("chat.completion", choices, usage, prompt)

    def completion(
        self, choices: Sequence[Mapping[str, Any]], *, usage: Mapping[str, Any]
    ) -> dict[str, Any]:
        """A whole non-streaming ``/v1/completions`` body (no prompt fields at the top: vLLM
        puts them in each choice)."""
        return self._whole("text_completion", choices, usage, {})

    def role_chunk(self, index: int, prompt_token_ids: Sequence[int] | None) -> dict[str, Any]:
        """A streamed chat choice's first chunk, with the prompt ids when they were asked for."""
        body = self._body("chat.completion.chunk", [role_choice(index)])
        if prompt_token_ids is not None:
            body.update(prompt_token_ids=list(prompt_token_ids), prompt_text=None)
        return self._close(body)

    def chat_chunk(self, choice: Mapping[str, Any], *, final: bool = False) -> dict[str, Any]:
        """A streamed chat token chunk; ``final`` (the stream's last chunk when no usage chunk
        follows) adds ``system_fingerprint``."""
        body = self._body("chat.completion.chunk", [choice])
        if final:
            body["system_fingerprint"] = self.fingerprint
        return self._close(body)

    def chat_usage_chunk(self, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
        """A chat stream's usage chunk (no choices; carries ``system_fingerprint``)."""
        body = self._body("chat.completion.chunk", [])
        body["usage"] = usage(prompt_tokens, completion_tokens, details=False)
        body["system_fingerprint"] = self.fingerprint
        return self._close(body)

    def completion_chunk(self, choice: Mapping[str, Any]) -> dict[str, Any]:
        """A streamed ``/v1/completions`` chunk."""
        return self._close(self._body("text_completion", [choice]))

    def completion_usage_chunk(self, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
        """A completions stream's usage chunk (no choices, no fingerprint)."""
        body = self._body("text_completion", [])
        body["usage"] = usage(prompt_tokens, completion_tokens, details=False)
        return self._close(body)
