""":class:`HFTokenView`: a ``transformers`` tokenizer as :class:`fulmen.drift.TokenView`.

Takes the tokenizer object (core never imports ``transformers``): a backend that holds a
Hugging Face tokenizer (verl's, ``fulmen show --tokenizer``) wraps it. Messages are rendered the
way vLLM and the embedded server render them: text content parts joined with newlines, and
tool-call ``arguments`` given as a JSON string passed to the template as the parsed object
(Hermes/Qwen templates print ``arguments | tojson``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["HFTokenView"]


def _content(value: Any) -> Any:
    if isinstance(value, list):
        return "\n".join(
            str(p.get("text", "")) for p in value if isinstance(p, Mapping)
        )
    return value


def _call(call: Any) -> Any:
    if not isinstance(call, Mapping):
        return call
    function: Any = call.get("function")
    arguments = function.get("arguments") if isinstance(function, Mapping) else None
    if isinstance(arguments, str):
        try:
            parsed = json.loads(arguments)
        except json.JSONDecodeError:
            return dict(call)
        if isinstance(parsed, dict):
            return {**call, "function": {**function, "arguments": parsed}}
    return dict(call)


def _normalise(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        msg = dict(m)
        msg["content"] = _content(msg.get("content"))
        calls = msg.get("tool_calls")
        if isinstance(calls, list):
            msg["tool_calls"] = [_call(c) for c in calls]
        out.append(msg)
    return out


class HFTokenView:
    """The drift checks' tokenizer view over a ``transformers`` tokenizer."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def render_prompt(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]],
        template_kwargs: Mapping[str, Any],
    ) -> Sequence[int]:
        """Prompt ids through the tokenizer's chat template (generation prompt added)."""
        text = self.tokenizer.apply_chat_template(
            _normalise(messages), tools=[dict(t) for t in tools] or None,
            add_generation_prompt=True, tokenize=False, **dict(template_kwargs),
        )
        return [int(i) for i in self.tokenizer(text, add_special_tokens=False)["input_ids"]]

    def decode(self, ids: Sequence[int]) -> str:
        """``ids`` as text, special tokens kept."""
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=False))

    @property
    def special_tokens(self) -> frozenset[str]:
        """The tokenizer's special tokens."""
        return frozenset(str(t) for t in self.tokenizer.all_special_tokens)
