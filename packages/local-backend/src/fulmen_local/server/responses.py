"""Response bodies in vLLM's OpenAI wire format (checked against vLLM 0.32 recordings).

Non-streaming chat: vLLM's fields, with top-level ``prompt_token_ids`` and per-choice
``token_ids`` when ``return_token_ids`` is set (else null), ``logprobs.content[]`` entries
``{token, logprob, bytes, top_logprobs}``. Streaming chat: a role chunk per choice (carrying the
prompt ids), one chunk per token with its ``token_ids``, ``stop_reason`` on the finishing
chunk, an optional usage chunk, then ``[DONE]``. Every body also has ``policy_version``.
"""

from __future__ import annotations

import json
from typing import Any

from fulmen_local.server.outputs import SequenceOutput
from fulmen_local.server.tokens import TokenTexts

__all__ = ["POLICY_VERSION_HEADER", "ResponseBuilder", "dumps"]

POLICY_VERSION_HEADER = "X-Fulmen-Policy-Version"
"""Response header carrying the policy version that produced the response."""


def dumps(obj: Any) -> str:
    """Compact JSON, as vLLM writes it."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class ResponseBuilder:
    """Builds the JSON bodies of one request (shared identity fields).

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
        self.response_id = response_id
        self.model = model
        self.created = created
        self.policy_version = policy_version
        self.fingerprint = "fulmen-local"

    # ------------------------------------------------------------------ logprobs

    def chat_logprob_entry(
        self, token_id: int, logprob: float, top: tuple[tuple[int, float], ...]
    ) -> dict[str, Any]:
        """One ``logprobs.content[]`` entry."""
        token = self.text(token_id)
        return {
            "token": token,
            "logprob": logprob,
            "bytes": list(token.encode("utf-8")),
            "top_logprobs": [
                {"token": (t := self.text(i)), "logprob": lp, "bytes": list(t.encode("utf-8"))}
                for i, lp in top
            ],
        }

    def completion_logprobs(self, out: SequenceOutput) -> dict[str, Any]:
        """The ``/v1/completions`` logprobs object (tokens, offsets, top dicts)."""
        tokens = [self.text(t) for t in out.token_ids]
        offsets: list[int] = []
        pos = 0
        for token in tokens:
            offsets.append(pos)
            pos += len(token)
        tops: list[dict[str, float]] = []
        for token, lp, top in zip(tokens, out.logprobs, out.top_logprobs, strict=True):
            entry = {token: lp}
            for i, alt in top:
                entry.setdefault(self.text(i), alt)
            tops.append(entry)
        return {
            "text_offset": offsets,
            "token_logprobs": list(out.logprobs),
            "tokens": tokens,
            "top_logprobs": tops,
        }

    # ------------------------------------------------------------------ chat

    def chat_choice(
        self,
        out: SequenceOutput,
        *,
        content: str | None,
        tool_calls: list[dict[str, Any]] | None,
        logprobs: bool,
        token_ids: bool,
    ) -> dict[str, Any]:
        """One choice of a non-streaming chat completion."""
        message: dict[str, Any] = {
            "role": "assistant",
            "content": content,
            "refusal": None,
            "annotations": None,
            "audio": None,
            "function_call": None,
        }
        if tool_calls:
            message["tool_calls"] = tool_calls
        message["reasoning"] = None
        entries = None
        if logprobs:
            entries = {
                "content": [
                    self.chat_logprob_entry(t, lp, top)
                    for t, lp, top in zip(
                        out.token_ids, out.logprobs, out.top_logprobs, strict=True
                    )
                ]
            }
        return {
            "index": out.index,
            "message": message,
            "logprobs": entries,
            "finish_reason": "tool_calls" if tool_calls else out.finish_reason,
            "stop_reason": out.stop_reason,
            "token_ids": list(out.token_ids) if token_ids else None,
            "routed_experts": None,
        }

    def chat_completion(
        self,
        choices: list[dict[str, Any]],
        *,
        prompt_ids: tuple[int, ...],
        completion_tokens: int,
        token_ids: bool,
    ) -> dict[str, Any]:
        """The whole non-streaming chat completion body."""
        return {
            "id": self.response_id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "service_tier": None,
            "system_fingerprint": self.fingerprint,
            "usage": self.usage(len(prompt_ids), completion_tokens, details=True),
            "prompt_logprobs": None,
            "prompt_token_ids": list(prompt_ids) if token_ids else None,
            "prompt_text": None,
            "kv_transfer_params": None,
            "ec_transfer_params": None,
            "metrics": None,
            "policy_version": self.policy_version,
        }

    def usage(self, prompt: int, completion: int, *, details: bool) -> dict[str, Any]:
        """Token counts (``details`` adds vLLM's null detail fields)."""
        usage: dict[str, Any] = {
            "prompt_tokens": prompt,
            "total_tokens": prompt + completion,
            "completion_tokens": completion,
        }
        if details:
            usage["prompt_tokens_details"] = None
            usage["completion_tokens_details"] = None
        return usage

    def chunk(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        """A ``chat.completion.chunk`` with the given choices and extra top-level fields."""
        body: dict[str, Any] = {
            "id": self.response_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        body.update(extra)
        body["policy_version"] = self.policy_version
        return body

    def role_chunk(self, index: int, prompt_ids: tuple[int, ...] | None) -> dict[str, Any]:
        """First chunk of a streamed choice (prompt ids when requested)."""
        choice = {
            "index": index,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        }
        if prompt_ids is None:
            return self.chunk([choice])
        return self.chunk([choice], prompt_token_ids=list(prompt_ids), prompt_text=None)

    def usage_chunk(self, prompt: int, completion: int) -> dict[str, Any]:
        """The final usage chunk (``stream_options.include_usage``)."""
        return self.chunk(
            [],
            usage=self.usage(prompt, completion, details=False),
            system_fingerprint=self.fingerprint,
        )

    # ------------------------------------------------------------------ completions

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
        return {
            "index": index,
            "text": out.text,
            "logprobs": self.completion_logprobs(out) if logprobs else None,
            "finish_reason": out.finish_reason,
            "stop_reason": out.stop_reason,
            "token_ids": list(out.token_ids) if token_ids else None,
            "prompt_logprobs": None,
            "prompt_token_ids": list(prompt_ids) if token_ids else None,
            "routed_experts": None,
        }

    def completion(
        self, choices: list[dict[str, Any]], *, prompt_tokens: int, completion_tokens: int
    ) -> dict[str, Any]:
        """The whole non-streaming ``/v1/completions`` body."""
        return {
            "id": self.response_id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "service_tier": None,
            "system_fingerprint": self.fingerprint,
            "usage": self.usage(prompt_tokens, completion_tokens, details=True),
            "kv_transfer_params": None,
            "ec_transfer_params": None,
            "metrics": None,
            "policy_version": self.policy_version,
        }

    def completion_chunk(self, choice: dict[str, Any], **extra: Any) -> dict[str, Any]:
        """A streamed ``text_completion`` chunk."""
        body: dict[str, Any] = {
            "id": self.response_id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        }
        body.update(extra)
        body["policy_version"] = self.policy_version
        return body
