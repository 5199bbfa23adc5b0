"""The gateway's side of exact-continuity mode: anchors per (episode, agent), the upstream's
``/tokenize``, and the decision to serve a call token-in (rules in
:mod:`fulmen.gateway.continuity`).

Thread-safety: used from the gateway's event loop, except :meth:`Continuator.forget` (one
atomic dictionary pop), which any thread may call.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec

from fulmen.gateway.capture import CallContext
from fulmen.gateway.continuity import Anchor, ContinuityStats, continuation_ids, extends
from fulmen.protocol import Transition

__all__ = ["Continuator", "Plan"]

_log = logging.getLogger("fulmen.gateway")

_NATURAL_ENDS = frozenset({"stop", "tool_calls"})


@dataclass(frozen=True, slots=True)
class Plan:
    """A call to serve token-in."""

    prompt: tuple[int, ...]
    """The token-id prompt: the anchor's prompt + response + the new messages' ids."""
    anchor: Anchor
    """The call it continues."""


class _TokenizeError(Exception):
    """The upstream's /tokenize did not answer with token ids."""


class Continuator:
    """Anchors and token-in decisions for one gateway.

    Args:
        upstream: the inference server's base URL (no ``/v1``).
        session: the gateway's upstream HTTP session (its timeouts apply).
        tool_parser: the upstream's tool-call parser name (vLLM's ``--tool-call-parser``).
    """

    def __init__(self, upstream: str, session: aiohttp.ClientSession, tool_parser: str) -> None:
        self._tokenize_url = f"{upstream}/tokenize"
        self._session = session
        self.tool_parser = tool_parser
        self.stats = ContinuityStats()
        self._anchors: dict[str, dict[str | None, Anchor]] = {}
        """Per episode, per agent: the last call served."""

    def forget(self, episode_id: str) -> None:
        """Drop the anchors of a finished episode."""
        self._anchors.pop(episode_id, None)

    def remember(self, ctx: CallContext, transitions: Sequence[Transition]) -> None:
        """Make a served one-choice chat call the anchor of its (episode, agent)."""
        anchors = self._anchors.setdefault(ctx.episode_id, {})
        t = transitions[0] if len(transitions) == 1 else None
        if ctx.n != 1 or t is None or not t.prompt_token_ids or not t.response_token_ids:
            anchors.pop(ctx.agent, None)
            return
        stop_reason = t.metadata.get("stop_reason")
        anchors[ctx.agent] = Anchor(
            messages=ctx.messages,
            tools=ctx.tools,
            answer=t.response_message,
            prompt_ids=t.prompt_token_ids,
            response_ids=t.response_token_ids,
            ended=t.finish_reason in _NATURAL_ENDS and stop_reason is None,
            request_id=t.request_id,
        )

    async def plan(self, ctx: CallContext, body: Mapping[str, Any]) -> Plan | None:
        """A token-in plan for this chat call, or None (the reason counted) to serve it as is."""
        anchor = self._anchors.get(ctx.episode_id, {}).get(ctx.agent)
        reason: str | None = None
        if ctx.stream or ctx.n != 1:
            reason = "unsupported"
        elif ctx.constraint.kind == "call":
            reason = "constrained"
        elif anchor is None:
            reason = "no_anchor"
        elif not extends(anchor, ctx.messages, ctx.tools):
            reason = "context_change"
        elif not anchor.ended:
            reason = "open_end"
        if reason is not None or anchor is None:
            self.stats.fall_back(reason or "no_anchor")
            return None
        k = len(anchor.messages)
        try:
            before, after = await asyncio.gather(
                self._tokenize(body, ctx.messages[: k + 1], generation_prompt=False),
                self._tokenize(body, ctx.messages, generation_prompt=True),
            )
        except (_TokenizeError, TimeoutError, aiohttp.ClientError) as exc:
            _log.warning("exact continuity: the upstream could not render %s (%s)", ctx.request_id, exc)
            self.stats.fall_back("no_tokenize")
            return None
        prompt = continuation_ids(anchor, before, after)
        if prompt is None:
            self.stats.fall_back("template_change")
            return None
        self.stats.continued += 1
        return Plan(prompt=prompt, anchor=anchor)

    async def _tokenize(
        self, body: Mapping[str, Any], messages: Sequence[Mapping[str, Any]], *, generation_prompt: bool
    ) -> list[int]:
        request: dict[str, Any] = {
            "messages": list(messages),
            "add_generation_prompt": generation_prompt,
            "add_special_tokens": False,
        }
        for key in ("model", "tools", "chat_template_kwargs"):
            if body.get(key) is not None:
                request[key] = body[key]
        async with self._session.post(
            self._tokenize_url,
            data=json.dumps(request).encode(),
            headers={"Content-Type": "application/json"},
        ) as response:
            raw = await response.read()
        if response.status != 200:
            raise _TokenizeError(f"/tokenize answered HTTP {response.status}: {raw[:300]!r}")
        try:
            tokens = msgspec.json.decode(raw, type=dict[str, Any]).get("tokens")
        except msgspec.DecodeError as exc:
            raise _TokenizeError(f"/tokenize sent invalid JSON ({exc})") from exc
        if type(tokens) is not list or not all(type(t) is int for t in tokens):
            raise _TokenizeError("/tokenize sent no 'tokens' list of ints")
        return tokens
