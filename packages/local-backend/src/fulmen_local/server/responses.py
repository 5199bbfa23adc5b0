"""The server's responses: engine outputs written in vLLM's OpenAI wire format.

How a body, chunk or logprob looks is :mod:`fulmen.wire`'s (shared with the vLLM test double);
this module fills them from what the engine produced (:class:`SequenceOutput`,
:class:`TokenEvent`) with the tokenizer's token texts. Every body and chunk ends with fulmen's
``policy_version``.
"""

from __future__ import annotations

from typing import Any

from fulmen import wire

from fulmen_local.server.outputs import SequenceOutput, TokenEvent
from fulmen_local.server.tokens import TokenTexts

__all__ = ["FINGERPRINT", "ResponseBuilder"]

FINGERPRINT = "fulmen-local"
"""``system_fingerprint`` of this server's responses."""


class ResponseBuilder:
    """Writes the bodies and chunks of one request.

    Args:
        texts: Token texts for logprobs.
        response_id: ``chatcmpl-...`` or ``cmpl-...``.
        model: Served model name.
        created: Unix time of the request.
        policy_version: Version of the weights that produced the response.
    """

    def __init__(
        self,
        texts: TokenTexts,
        *,
        response_id: str,
        model: str,
        created: int,
        policy_version: int,
    ) -> None:
        self.text = texts
        """Text of one token, as logprobs report it."""
        self.policy_version = policy_version
        self.envelope = wire.Envelope(
            response_id=response_id,
            created=created,
            model=model,
            fingerprint=FINGERPRINT,
            trailer={"policy_version": policy_version},
        )
        """Identity fields and whole bodies (see :class:`fulmen.wire.Envelope`)."""

    # ------------------------------------------------------------------ logprobs

    def _top(self, top: tuple[tuple[int, float], ...]) -> wire.TopLogprobs:
        return [(self.text(i), lp) for i, lp in top]

    def chat_logprob(
        self, token_id: int, logprob: float, top: tuple[tuple[int, float], ...]
    ) -> dict[str, Any]:
        """One ``logprobs.content[]`` entry."""
        return wire.chat_logprob(self.text(token_id), logprob, self._top(top))

    def completion_logprobs(
        self,
        token_ids: tuple[int, ...],
        logprobs: tuple[float, ...],
        tops: tuple[tuple[tuple[int, float], ...], ...],
        *,
        offset: int = 0,
    ) -> dict[str, Any]:
        """The ``/v1/completions`` logprobs object of consecutive tokens."""
        return wire.completion_logprobs(
            [self.text(t) for t in token_ids],
            logprobs,
            [self._top(top) for top in tops],
            offset=offset,
        )

    # ------------------------------------------------------------------ whole responses

    def chat_choice(
        self,
        out: SequenceOutput,
        *,
        content: str | None,
        tool_calls: list[dict[str, Any]] | None,
        logprobs: bool,
        token_ids: bool,
    ) -> dict[str, Any]:
        """One choice of a non-streaming chat completion (finishing ``tool_calls`` when the
        parser found calls)."""
        entries = None
        if logprobs:
            entries = [
                self.chat_logprob(t, lp, top)
                for t, lp, top in zip(out.token_ids, out.logprobs, out.top_logprobs, strict=True)
            ]
        return wire.chat_choice(
            out.index,
            out,
            wire.chat_message(content, tool_calls or ()),
            logprobs=entries,
            return_token_ids=token_ids,
            finish_reason="tool_calls" if tool_calls else None,
        )

    def completion_choice(
        self,
        out: SequenceOutput,
        index: int,
        prompt_ids: tuple[int, ...],
        *,
        logprobs: bool,
        token_ids: bool,
    ) -> dict[str, Any]:
        """One choice of a non-streaming ``/v1/completions`` body."""
        entries = None
        if logprobs:
            entries = self.completion_logprobs(out.token_ids, out.logprobs, out.top_logprobs)
        return wire.completion_choice(
            index, out, logprobs=entries, prompt_token_ids=prompt_ids, return_token_ids=token_ids
        )

    # ------------------------------------------------------------------ stream choices

    def chat_event_choice(
        self,
        ev: TokenEvent,
        delta: dict[str, Any],
        finish_reason: str | None,
        *,
        logprobs: bool,
        token_ids: bool,
    ) -> dict[str, Any]:
        """The choice of the chat chunk carrying one engine event."""
        entries = None
        if logprobs and ev.token_id is not None:
            entries = [self.chat_logprob(ev.token_id, ev.logprob or 0.0, ev.top_logprobs)]
        return wire.chat_chunk_choice(
            ev.index,
            delta,
            logprobs=entries,
            finish_reason=finish_reason,
            stop_reason=ev.stop_reason,
            token_ids=_event_ids(ev) if token_ids else None,
        )

    def completion_event_choice(
        self,
        ev: TokenEvent,
        index: int,
        *,
        offset: int,
        logprobs: bool,
        token_ids: bool,
        prompt_ids: list[int] | None,
    ) -> dict[str, Any]:
        """The choice of the completions chunk carrying one engine event; ``offset``: the
        characters of token text this choice has reported so far; ``prompt_ids`` on the
        choice's first chunk only."""
        entries = None
        if logprobs and ev.token_id is not None:
            entries = self.completion_logprobs(
                (ev.token_id,), (ev.logprob or 0.0,), (ev.top_logprobs,), offset=offset
            )
        return wire.completion_chunk_choice(
            index,
            ev.text,
            logprobs=entries,
            finish_reason=ev.finish_reason,
            stop_reason=ev.stop_reason,
            token_ids=_event_ids(ev) if token_ids else None,
            prompt_token_ids=prompt_ids if token_ids else None,
        )


def _event_ids(ev: TokenEvent) -> list[int]:
    return [ev.token_id] if ev.token_id is not None else []
