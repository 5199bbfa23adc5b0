"""Checks that need the policy's tokenizer: re-rendered prompts and token anomalies.

Core has no tokenizer. A backend whose :class:`~fulmen.train.policy.Policy` also implements
:class:`TokenView` (the policy's own tokenizer and chat template) gets these checks on every
step; without one they are skipped and their metrics absent.

* **Re-rendered prompt vs served ids** (:func:`render_check`): the recorded messages and tools
  of a chat call, rendered again through the chat template, should give exactly the prompt ids
  the server ran. When they do not, anything that rebuilds sequences from messages (an SFT
  pass, a trainer that re-tokenises, the next call's prompt) sees other tokens than the model
  did. Completions calls (``metadata["endpoint"] == "completions"``) are not checked: their
  "message" is the raw prompt text, not a chat; nor are calls flagged :data:`TOKEN_IN_FLAG`
  (the gateway sent the server token ids, the earlier call's ids + the new messages' rendering,
  which differ from a full re-render by design).
* **Token anomalies** (:func:`token_anomalies`), each a call count; none changes what is
  trained (the recorded ids are trained as they are), they say where the text the agent saw
  differs from those ids:

  - ``tool_tail_dropped``: the response ids decode to more Hermes ``<tool_call>`` blocks than
    the call returned as tool calls or left in its content (a streaming tool parser dropped the
    tail of a tool call: the agent never saw it, the trainer trains it);
  - ``special_tokens_in_content``: with tools offered, the returned content holds a special
    token's text (``<|im_end|>``...): the server's parser let template tokens through;
  - ``special_tokens_dropped``: the model generated a special token before its end (a
    ``<|im_start|>`` or ``<|pad|>`` mid-answer) that the content leaves out: an agent that
    re-sends its content breaks the prefix there, and the trainer trains a token the agent
    never saw;
  - ``partial_utf8_cut``: a call cut by ``max_tokens`` whose ids end inside a multi-byte UTF-8
    character (their decoding ends with U+FFFD): the server held those bytes back from the
    text, the trainer trains them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from fulmen.drift.prefix import first_divergence
from fulmen.protocol import Transition

__all__ = [
    "ANOMALY_KINDS",
    "TOKEN_IN_FLAG",
    "TOOL_CALL_OPEN",
    "RenderCheck",
    "TokenView",
    "render_check",
    "token_anomalies",
]

TOOL_CALL_OPEN = "<tool_call>"
"""The Hermes tool-call opening tag (Qwen2/2.5/3 and the Hermes family)."""

TOKEN_IN_FLAG = "token_in"
""":attr:`Transition.flags <fulmen.protocol.Transition.flags>` entry of a call whose prompt the
gateway sent as token ids (exact continuity): never re-rendered."""

ANOMALY_KINDS: tuple[str, ...] = (
    "tool_tail_dropped",
    "special_tokens_in_content",
    "special_tokens_dropped",
    "partial_utf8_cut",
)
"""What :func:`token_anomalies` can report (module docstring)."""

_REPLACEMENT = "\ufffd"


@runtime_checkable
class TokenView(Protocol):
    """The policy's tokenizer, as the drift checks need it (a backend's policy may implement
    it; :mod:`fulmen.drift.metrics` uses it when it does)."""

    def render_prompt(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]],
        template_kwargs: Mapping[str, Any],
    ) -> Sequence[int]:
        """Prompt ids of ``messages`` (OpenAI chat format) and ``tools`` through the chat
        template, ending with the assistant generation prompt, as the server renders them
        (``template_kwargs``: the request's ``chat_template_kwargs``)."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids``, special tokens included (undecodable bytes as U+FFFD)."""
        ...

    @property
    def special_tokens(self) -> frozenset[str]:
        """The text of every special token (``<|im_end|>``...), never plain words."""
        ...


@dataclass(frozen=True, slots=True)
class RenderCheck:
    """One chat call's prompt, rendered again from its recorded messages."""

    transition: Transition
    rendered: tuple[int, ...]
    """What the template gives for the recorded messages and tools."""
    divergence: int | None
    """First index where the served prompt ids and ``rendered`` differ (the shorter length
    when one is a prefix of the other); None when they are equal."""

    @property
    def matches(self) -> bool:
        """Served and re-rendered ids are equal."""
        return self.divergence is None


def _template_kwargs(t: Transition) -> Mapping[str, Any]:
    params = t.metadata.get("params")
    if isinstance(params, Mapping):
        kwargs = params.get("chat_template_kwargs")
        if isinstance(kwargs, Mapping):
            return {str(k): v for k, v in kwargs.items()}
    return {}


def render_check(t: Transition, view: TokenView) -> RenderCheck | None:
    """``t``'s recorded messages rendered by ``view`` and compared with its served prompt ids;
    None for a call that cannot be checked (no messages or prompt ids, a completions call, a
    :data:`TOKEN_IN_FLAG` call).

    Raises:
        Exception: whatever ``view.render_prompt`` raises (a template that rejects the
            messages); the caller counts it.
    """
    if (
        not t.request_messages
        or not t.prompt_token_ids
        or t.metadata.get("endpoint") == "completions"
        or TOKEN_IN_FLAG in t.flags
    ):
        return None
    rendered = tuple(view.render_prompt(t.request_messages, t.request_tools, _template_kwargs(t)))
    served = t.prompt_token_ids
    divergence = first_divergence(served, rendered)
    if divergence is None and len(rendered) != len(served):
        divergence = len(served)
    return RenderCheck(t, rendered, divergence)


def token_anomalies(t: Transition, view: TokenView) -> tuple[str, ...]:
    """The anomalies of :data:`ANOMALY_KINDS` that ``t`` shows (module docstring); empty for a
    call without response ids."""
    if not t.response_token_ids:
        return ()
    text = view.decode(t.response_token_ids)
    raw_content = t.response_message.get("content")
    content = raw_content if isinstance(raw_content, str) else ""
    found: list[str] = []
    if text.count(TOOL_CALL_OPEN) > len(t.tool_calls) + content.count(TOOL_CALL_OPEN):
        found.append("tool_tail_dropped")
    if t.request_tools and content and any(s in content for s in view.special_tokens if s):
        found.append("special_tokens_in_content")
    if any(
        text.count(s) - text.endswith(s) > content.count(s) for s in view.special_tokens if s
    ):
        found.append("special_tokens_dropped")
    if t.finish_reason == "length" and text.endswith(_REPLACEMENT):
        found.append("partial_utf8_cut")
    return tuple(found)
