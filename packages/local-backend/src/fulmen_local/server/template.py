"""Chat prompt rendering: OpenAI messages and tools through the tokenizer's chat template.

Before templating, messages are normalised the way vLLM does it: content given as a list of
text parts is joined with newlines, and assistant ``tool_calls`` whose ``arguments`` is a JSON
string (the OpenAI wire format) get the parsed object instead, because Hermes/Qwen-style
templates render ``arguments | tojson``. The rendered text is tokenized without adding special
tokens (the template already has them).

:func:`template_supports_tools` tells whether a tokenizer's template shows tools to the model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from transformers import PreTrainedTokenizerBase

from fulmen_local.server.errors import ApiError, bad_request

__all__ = ["normalize_messages", "render_chat_prompt", "template_supports_tools"]


def normalize_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Copy ``messages`` into the shape chat templates expect (see the module docstring).

    Raises:
        ApiError: 400 for content parts that are not text.
    """
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        msg = dict(message)
        content = msg.get("content")
        if isinstance(content, list):
            msg["content"] = _join_parts(content, f"messages[{i}].content")
        calls = msg.get("tool_calls")
        if isinstance(calls, list):
            msg["tool_calls"] = [_parsed_call(c) for c in calls]
        out.append(msg)
    return out


def _join_parts(parts: list[Any], where: str) -> str:
    texts: list[str] = []
    for j, part in enumerate(parts):
        if isinstance(part, Mapping) and part.get("type") == "text":
            text = part.get("text")
            if isinstance(text, str):
                texts.append(text)
                continue
        raise bad_request(f"{where}[{j}]: only text content parts are supported", "messages")
    return "\n".join(texts)


def _parsed_call(call: Any) -> Any:
    if not isinstance(call, Mapping):
        return call
    function = call.get("function")
    if not isinstance(function, Mapping):
        return dict(call)
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            parsed = json.loads(arguments)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            return {**call, "function": {**function, "arguments": parsed}}
    return dict(call)


def render_chat_prompt(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Mapping[str, Any]],
    *,
    tools: Sequence[Mapping[str, Any]] | None = None,
    template_kwargs: Mapping[str, Any] | None = None,
    add_generation_prompt: bool = True,
) -> list[int]:
    """Token ids of the templated conversation, ending with the assistant generation prompt
    (unless ``add_generation_prompt`` is False).

    Raises:
        ApiError: 400 when the tokenizer has no chat template or the template rejects the
            conversation (the template's own message is included).
    """
    if not getattr(tokenizer, "chat_template", None):
        raise bad_request(
            "the served tokenizer has no chat template; use /v1/completions", "messages"
        )
    try:
        text = tokenizer.apply_chat_template(
            normalize_messages(messages),
            tools=[dict(t) for t in tools] if tools else None,
            add_generation_prompt=add_generation_prompt,
            tokenize=False,
            **dict(template_kwargs or {}),
        )
    except ApiError:
        raise
    except Exception as exc:
        raise bad_request(
            f"the chat template failed: {type(exc).__name__}: {exc}", "messages"
        ) from exc
    if not isinstance(text, str):
        raise ApiError(500, f"the chat template returned {type(text).__name__}, expected text")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return [int(t) for t in ids]


_PROBE_TOOL_NAME = "fulmen_probe_lookup"
_PROBE_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": _PROBE_TOOL_NAME,
        "description": "Look a word up.",
        "parameters": {
            "type": "object",
            "properties": {"word": {"type": "string", "description": "The word."}},
            "required": ["word"],
        },
    },
}


def template_supports_tools(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether the tokenizer's chat template renders tools into the prompt.

    Renders a one-message conversation with one tool and looks for the tool's name in the
    text. False when there is no chat template, or it ignores tools (Gemma's, Phi-3's) or
    fails on the probe.
    """
    if not getattr(tokenizer, "chat_template", None):
        return False
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "What does 'tool' mean?"}],
            tools=[dict(_PROBE_TOOL)],
            add_generation_prompt=True,
            tokenize=False,
        )
    except Exception:  # any template error: it cannot be relied on to show tools
        return False
    return isinstance(text, str) and _PROBE_TOOL_NAME in text
