"""Turn an upstream response (or an accumulated stream) into :class:`~fulmen.protocol.Transition`s.

One transition per returned choice; choice ``i`` gets ``seq = first_seq + i``. A stream is first
reassembled by :class:`StreamAccumulator` into the response the same call would have returned
without streaming, and both go through :func:`transitions_from_response`: the records of a
streamed and a non-streamed call are equal by construction (except timing and the ``stream``
flag).

Token ids are only ever copied from the upstream. When it sent none, the transition gets empty
id tuples and the flag ``no_token_ids`` (never invented ids); missing logprobs give
``response_logprobs=None`` and the flag ``no_logprobs``; logprobs whose count differs from the
response ids get ``logprobs_mismatch``. Empty content is recorded as ``None``. Tokens sampled
under a grammar (:mod:`fulmen.gateway.constrained`) are marked by ``constrained_from``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fulmen.gateway.constrained import UNCONSTRAINED, Constraint, constrained_from
from fulmen.protocol import Transition

__all__ = ["CallContext", "StreamAccumulator", "keep_choices", "transitions_from_response"]

CHAT = "chat.completions"
COMPLETIONS = "completions"


@dataclass(frozen=True, slots=True, kw_only=True)
class CallContext:
    """What the gateway knows about one LLM call before the upstream answers."""

    episode_id: str
    first_seq: int
    """Seq of choice 0; choice ``i`` is recorded at ``first_seq + i``."""
    request_id: str
    """``X-Request-Id`` sent upstream (``{episode}.{first_seq}``)."""
    endpoint: str
    """``chat.completions`` or ``completions``."""
    agent: str | None
    parent_id: str | None
    tags: Mapping[str, str]
    """Other ``X-Fulmen-*`` request headers (lower-case name without the prefix)."""
    messages: tuple[Mapping[str, Any], ...]
    """Chat messages as sent by the agent (empty for completions)."""
    prompts: tuple[Any, ...]
    """Completions prompts, one per prompt in the request (empty for chat)."""
    tools: tuple[Mapping[str, Any], ...]
    params: Mapping[str, Any]
    """Sampling parameters and model as the agent sent them (no messages, tools, stream)."""
    n: int
    """Choices per prompt."""
    started_at: float
    stream: bool
    routed: bool = False
    """The gateway routes calls to per-agent policies (:class:`fulmen.policies.PolicyRoutes`)."""
    policy: str | None = None
    """With :attr:`routed`: the policy the call was sent to (None: the frozen base)."""
    constraint: Constraint = UNCONSTRAINED
    """How the request constrains sampling (:func:`~fulmen.gateway.constrained.constraint_of`)."""

    @property
    def choice_limit(self) -> int:
        """Choices the call asked for (``n`` per prompt): valid indexes are ``0..limit-1``."""
        return self.n * max(len(self.prompts), 1)


def keep_choices(response: dict[str, Any], limit: int) -> bool:
    """Keep (in place) only the choices a call asked for: objects whose ``index`` (their
    position when absent) lies in ``0..limit-1``, the first of each index. Returns True when
    something was dropped. What the agent receives and what is recorded both come from the
    kept list, so they are always the same choices."""
    choices = response.get("choices")
    if not isinstance(choices, list):
        return False
    kept: list[Any] = []
    seen: set[int] = set()
    for position, choice in enumerate(choices):
        if not isinstance(choice, dict):
            continue
        index = choice.get("index", position)
        if type(index) is int and 0 <= index < limit and index not in seen:
            seen.add(index)
            kept.append(choice)
    if len(kept) == len(choices):
        return False
    response["choices"] = kept
    return True


def _message(choice: Mapping[str, Any]) -> tuple[dict[str, Any], tuple[dict[str, Any], ...]]:
    """Normalized assistant message and tool calls of a chat choice."""
    raw: Mapping[str, Any] = choice.get("message") or {}
    message: dict[str, Any] = {
        "role": raw.get("role") or "assistant",
        "content": raw.get("content") or None,
    }
    calls = tuple(
        {
            "id": call.get("id"),
            "type": call.get("type") or "function",
            "function": {
                "name": (call.get("function") or {}).get("name"),
                "arguments": (call.get("function") or {}).get("arguments") or "",
            },
        }
        for call in raw.get("tool_calls") or ()
    )
    if calls:
        message["tool_calls"] = list(calls)
    reasoning = raw.get("reasoning") or raw.get("reasoning_content")
    if reasoning:
        message["reasoning"] = reasoning
    return message, calls


_NUMBERS = frozenset({int, float})


def _logprobs(choice: Mapping[str, Any], endpoint: str) -> tuple[float, ...] | None:
    """The sampled tokens' logprobs, or None when absent or malformed."""
    raw = choice.get("logprobs")
    if not isinstance(raw, dict):
        return None
    try:
        if endpoint == CHAT:
            values = [entry["logprob"] for entry in raw["content"]]
        else:
            values = list(raw["token_logprobs"])
    except (KeyError, TypeError):
        return None
    if not set(map(type, values)) <= _NUMBERS:
        return None  # JSON numbers only (no null, no bool)
    return tuple(map(float, values))


def _token_texts(choice: Mapping[str, Any], endpoint: str) -> list[str] | None:
    """The response tokens' texts from the logprobs, or None when absent or malformed."""
    raw = choice.get("logprobs")
    if not isinstance(raw, dict):
        return None
    try:
        if endpoint == CHAT:
            texts = [entry["token"] for entry in raw["content"]]
        else:
            texts = list(raw["tokens"])
    except (KeyError, TypeError):
        return None
    return texts if all(isinstance(t, str) for t in texts) else None


def _ids(value: object) -> tuple[int, ...] | None:
    """Token ids, or None when absent or not a list of ints."""
    if type(value) is not list or not set(map(type, value)) <= {int}:
        return None
    return tuple(value)


def transitions_from_response(
    ctx: CallContext,
    response: Mapping[str, Any],
    *,
    policy_version: int | None,
    upstream_latency_s: float,
    ended_at: float,
) -> list[Transition]:
    """One transition per choice of a (non-streaming shaped) upstream response.

    Choices whose index lies outside the ``n`` (times prompts) the call reserved are ignored.
    """
    out: list[Transition] = []
    top_prompt = _ids(response.get("prompt_token_ids"))
    choices: Sequence[Any] = response.get("choices") or ()
    for position, choice in enumerate(choices):
        if not isinstance(choice, Mapping):
            continue
        index = choice.get("index", position)
        index = index if isinstance(index, int) else position
        if not 0 <= index < ctx.n * max(len(ctx.prompts), 1):
            continue  # not a choice this call asked for: its seq would belong to another call
        if ctx.endpoint == CHAT:
            message, calls = _message(choice)
            request_messages = ctx.messages
            prompt_ids = top_prompt
        else:
            text = choice.get("text")
            message, calls = {"role": "assistant", "content": text or None}, ()
            prompt = ctx.prompts[min(index // max(ctx.n, 1), len(ctx.prompts) - 1)]
            request_messages = ({"role": "user", "content": prompt},)
            prompt_ids = _ids(choice.get("prompt_token_ids"))
        response_ids = _ids(choice.get("token_ids"))
        logprobs = _logprobs(choice, ctx.endpoint)
        flags: list[str] = []
        if ctx.stream:
            flags.append("stream")
        if prompt_ids is None or response_ids is None:
            flags.append("no_token_ids")
        if logprobs is None:
            flags.append("no_logprobs")
        elif response_ids is not None and len(logprobs) != len(response_ids):
            flags.append("logprobs_mismatch")
        metadata: dict[str, Any] = {
            "endpoint": ctx.endpoint,
            "model": response.get("model") or ctx.params.get("model"),
            "params": dict(ctx.params),
            "choice_index": index,
        }
        stop_reason = choice.get("stop_reason")
        if stop_reason is not None:
            metadata["stop_reason"] = stop_reason
        if ctx.tags:
            metadata["tags"] = dict(ctx.tags)
        if ctx.routed:
            metadata["policy"] = ctx.policy
        constrained = constrained_from(
            ctx.constraint,
            _token_texts(choice, ctx.endpoint),
            bool(calls),
            len(response_ids or ()),
        )
        out.append(
            Transition(
                episode_id=ctx.episode_id,
                seq=ctx.first_seq + index,
                request_id=ctx.request_id,
                agent=ctx.agent,
                request_messages=request_messages,
                request_tools=ctx.tools,
                response_message=message,
                tool_calls=calls,
                prompt_token_ids=prompt_ids or (),
                response_token_ids=response_ids or (),
                response_logprobs=logprobs,
                constrained_from=constrained,
                finish_reason=choice.get("finish_reason"),
                policy_version=policy_version,
                started_at=ctx.started_at,
                ended_at=ended_at,
                upstream_latency_s=upstream_latency_s,
                parent_id=ctx.parent_id,
                flags=tuple(flags),
                metadata=metadata,
            )
        )
    return out


@dataclass(slots=True)
class _ChoiceAcc:
    text: list[str] = field(default_factory=list[str])
    reasoning: list[str] = field(default_factory=list[str])
    role: str | None = None
    calls: dict[int, dict[str, Any]] = field(default_factory=dict[int, dict[str, Any]])
    token_ids: list[int] | None = None
    prompt_ids: list[int] | None = None
    logprobs: list[Any] | None = None
    """Chat ``logprobs.content`` entries, or completions ``token_logprobs`` values."""
    tokens: list[Any] | None = None
    """Completions ``logprobs.tokens`` (the tokens' texts)."""
    finish_reason: str | None = None
    stop_reason: Any = None


class StreamAccumulator:
    """Reassembles streamed chunks into the equivalent non-streaming response.

    Feed every parsed ``data:`` chunk in order (before anything is stripped from it), then call
    :meth:`response`. Handles content, reasoning, tool-call deltas merged by ``index``, token ids
    (also on chunks whose delta is empty), prompt ids (top level for chat, per choice for
    completions), logprobs, ``finish_reason`` and ``stop_reason``.
    """

    def __init__(self, endpoint: str) -> None:
        self._endpoint = endpoint
        self._choices: dict[int, _ChoiceAcc] = {}
        self._prompt_ids: list[int] | None = None
        self._model: Any = None

    def feed(self, chunk: Mapping[str, Any]) -> None:
        """Add one chunk."""
        if self._model is None:
            self._model = chunk.get("model")
        prompt = chunk.get("prompt_token_ids")
        if self._prompt_ids is None and isinstance(prompt, list):
            self._prompt_ids = list(prompt)
        for choice in chunk.get("choices") or ():
            if isinstance(choice, Mapping):
                self._feed_choice(choice)

    def _feed_choice(self, choice: Mapping[str, Any]) -> None:
        index = choice.get("index", 0)
        acc = self._choices.setdefault(index if isinstance(index, int) else 0, _ChoiceAcc())
        ids = choice.get("token_ids")
        if isinstance(ids, list):
            acc.token_ids = acc.token_ids if acc.token_ids is not None else []
            acc.token_ids.extend(ids)
        prompt = choice.get("prompt_token_ids")
        if acc.prompt_ids is None and isinstance(prompt, list):
            acc.prompt_ids = list(prompt)
        if choice.get("finish_reason") is not None:
            acc.finish_reason = choice["finish_reason"]
        if choice.get("stop_reason") is not None:
            acc.stop_reason = choice["stop_reason"]
        logprobs = choice.get("logprobs")
        if isinstance(logprobs, Mapping):
            key = "content" if self._endpoint == CHAT else "token_logprobs"
            values = logprobs.get(key)
            if isinstance(values, list):
                acc.logprobs = acc.logprobs if acc.logprobs is not None else []
                acc.logprobs.extend(values)
            tokens = logprobs.get("tokens")
            if self._endpoint != CHAT and isinstance(tokens, list):
                acc.tokens = acc.tokens if acc.tokens is not None else []
                acc.tokens.extend(tokens)
        if self._endpoint != CHAT:
            if isinstance(choice.get("text"), str):
                acc.text.append(choice["text"])
            return
        delta = choice.get("delta")
        if isinstance(delta, Mapping):
            self._feed_delta(acc, delta)

    @staticmethod
    def _feed_delta(acc: _ChoiceAcc, delta: Mapping[str, Any]) -> None:
        if isinstance(delta.get("role"), str):
            acc.role = delta["role"]
        if isinstance(delta.get("content"), str):
            acc.text.append(delta["content"])
        reasoning = delta.get("reasoning") or delta.get("reasoning_content")
        if isinstance(reasoning, str):
            acc.reasoning.append(reasoning)
        for call in delta.get("tool_calls") or ():
            if not isinstance(call, Mapping):
                continue
            index = call.get("index", 0)
            slot = acc.calls.setdefault(
                index if isinstance(index, int) else 0,
                {"id": None, "type": "function", "function": {"name": None, "arguments": ""}},
            )
            if call.get("id"):
                slot["id"] = call["id"]
            if call.get("type"):
                slot["type"] = call["type"]
            function = call.get("function") or {}
            if isinstance(function, Mapping):
                if function.get("name"):
                    slot["function"]["name"] = function["name"]
                if isinstance(function.get("arguments"), str):
                    slot["function"]["arguments"] += function["arguments"]

    def response(self) -> dict[str, Any]:
        """The non-streaming response the chunks add up to (only the fields capture reads)."""
        choices: list[dict[str, Any]] = []
        for index in sorted(self._choices):
            acc = self._choices[index]
            choice: dict[str, Any] = {
                "index": index,
                "finish_reason": acc.finish_reason,
                "stop_reason": acc.stop_reason,
                "token_ids": acc.token_ids,
            }
            text = "".join(acc.text)
            if self._endpoint == CHAT:
                message: dict[str, Any] = {"role": acc.role or "assistant", "content": text}
                if acc.calls:
                    message["tool_calls"] = [acc.calls[i] for i in sorted(acc.calls)]
                if acc.reasoning:
                    message["reasoning"] = "".join(acc.reasoning)
                choice["message"] = message
                has = acc.logprobs is not None
                choice["logprobs"] = {"content": acc.logprobs} if has else None
            else:
                choice["text"] = text
                choice["prompt_token_ids"] = acc.prompt_ids
                has = acc.logprobs is not None
                choice["logprobs"] = (
                    {"token_logprobs": acc.logprobs, "tokens": acc.tokens} if has else None
                )
            choices.append(choice)
        return {"model": self._model, "prompt_token_ids": self._prompt_ids, "choices": choices}
