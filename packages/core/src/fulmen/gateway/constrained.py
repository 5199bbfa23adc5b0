"""Which served logprobs come from constrained (grammar-guided) sampling.

When vLLM constrains decoding with a grammar, the logprobs it returns are those of the masked
distribution it sampled from, not the model's own: a forced token gets 0.0 where the model
gives it -11 (measured against vLLM 0.32, see ``docs/gateway.md``). An importance ratio against
such a value is meaningless, so the gateway records where constrained sampling began
(:attr:`fulmen.protocol.Transition.constrained_from`) and the trainer recomputes those tokens'
old logprobs instead of using the served ones (:func:`fulmen.batch.per_call.call_logprobs`).

A request constrains **the whole call** when it forces a tool call (``tool_choice``
``"required"`` or a named function), asks for structured output (``response_format`` of type
``json_object``, ``json_schema`` or ``structural_tag``; vLLM's ``structured_outputs`` or the
older ``guided_*`` fields). It constrains **from the first tool-call marker on** when a tool it
offers is ``strict`` (or the server constrains every tool call: vLLM's
``--tool-strict-level function|parameter``, :attr:`Constraint.strict_tools` here) and
``tool_choice`` is ``"auto"`` or absent: vLLM lets the model write freely until it opens a
tool call (Hermes: ``<tool_call>``), then applies the tool grammar.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["UNCONSTRAINED", "Constraint", "constrained_from", "constraint_of"]

_WHOLE_FORMATS = frozenset({"json_object", "json_schema", "structural_tag"})
_GUIDED = ("structured_outputs", "guided_json", "guided_regex", "guided_choice", "guided_grammar")
DEFAULT_MARKERS = ("<tool_call>",)
"""Where a Hermes-format tool call starts (the vLLM ``hermes`` parser's structural tag)."""


@dataclass(frozen=True, slots=True)
class Constraint:
    """How one request's sampling is constrained.

    ``kind``: ``"none"``, ``"call"`` (every generated token) or ``"tool_call"`` (from the first
    token whose text holds one of ``markers`` on; the whole call when the response holds tool
    calls but no marker token can be found, e.g. tokens rendered as ``token_id:N``).
    """

    kind: Literal["none", "call", "tool_call"]
    """What is constrained (class docstring)."""
    markers: tuple[str, ...] = DEFAULT_MARKERS
    """Texts that open a tool call in the served model's format."""


UNCONSTRAINED = Constraint("none")
"""A request whose sampling no grammar constrains."""


def _strict(tool: object) -> bool:
    if not isinstance(tool, Mapping):
        return False
    function: object = tool.get("function")
    return isinstance(function, Mapping) and function.get("strict") is True


def constraint_of(
    body: Mapping[str, Any],
    *,
    strict_tools: bool = False,
    markers: tuple[str, ...] = DEFAULT_MARKERS,
) -> Constraint:
    """The constraint a request body (as sent upstream) puts on sampling (module docstring).

    Args:
        body: the chat or completions request.
        strict_tools: the server constrains every tool call even without ``strict`` tools
            (vLLM ``--tool-strict-level function`` or ``parameter``).
        markers: texts that open a tool call in the served model's format.
    """
    choice = body.get("tool_choice")
    tools: Sequence[Any] = body.get("tools") or ()
    if tools and (choice == "required" or isinstance(choice, Mapping)):
        return Constraint("call", markers)
    response_format = body.get("response_format")
    if isinstance(response_format, Mapping) and response_format.get("type") in _WHOLE_FORMATS:
        return Constraint("call", markers)
    if any(body.get(key) not in (None, False) for key in _GUIDED):
        return Constraint("call", markers)
    if tools and choice in (None, "auto") and (strict_tools or any(map(_strict, tools))):
        return Constraint("tool_call", markers)
    return UNCONSTRAINED if markers == DEFAULT_MARKERS else Constraint("none", markers)


def constrained_from(
    constraint: Constraint, tokens: Sequence[str] | None, has_tool_calls: bool, length: int
) -> int | None:
    """Index of the first response token sampled under the constraint, or None.

    Args:
        constraint: the request's :class:`Constraint`.
        tokens: the response tokens' texts as the server rendered them in its logprobs (None
            when it sent none).
        has_tool_calls: the server parsed tool calls out of the response.
        length: number of response tokens.
    """
    if constraint.kind == "none" or length == 0:
        return None
    if constraint.kind == "call":
        return 0
    text = "".join(tokens or ())
    found = [at for at in (text.find(m) for m in constraint.markers) if at >= 0]
    if found:  # the token holding the marker's first character (a marker may span tokens)
        end = 0
        for i, token in enumerate(tokens or ()):
            end += len(token)
            if end > min(found):
                return i
    return 0 if has_tool_calls else None
