"""What the vLLM test double "generates": responder text turned into tokens, logprobs, tool calls.

Generation is deterministic: the same request (same seed, prompt and choice index) gives the same
text, token ids and logprobs, streamed or not. The text comes from a *responder*
``(messages, tools, params) -> str``; :func:`default_responder` writes seeded pseudo-text, or a
Hermes-style ``<tool_call>`` when tools are offered and the turn calls for one.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fulmen_testkit.vllm_double.tokenizer import TOOL_CALL_CLOSE, TOOL_CALL_OPEN, ToyTokenizer

__all__ = [
    "Generation",
    "RequestParams",
    "Responder",
    "ToolCallView",
    "default_responder",
    "generate",
    "parse_tool_calls",
    "stream_tool_view",
    "tool_call_id",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestParams:
    """What a responder may look at besides the messages and tools."""

    body: Mapping[str, Any]
    """The raw request body."""
    endpoint: str
    """``chat`` or ``completions``."""
    prompt_text: str
    """The rendered prompt (the ChatML text for chat, the prompt string for completions)."""
    seed: int
    """Effective seed (0 when the request gave none or asked for greedy decoding)."""
    choice_index: int
    """Which of the ``n`` choices is being generated."""

    def rng(self, salt: str = "") -> random.Random:
        """A generator seeded by seed, choice, prompt and ``salt``: same inputs, same stream."""
        digest = hashlib.blake2b(
            f"{self.seed}\x00{self.choice_index}\x00{salt}\x00{self.prompt_text}".encode(),
            digest_size=16,
        ).hexdigest()
        return random.Random(digest)


Responder = Callable[[Sequence[Mapping[str, Any]], Sequence[Mapping[str, Any]], RequestParams], str]
"""``(messages, tools, params) -> text``: the raw assistant text (may contain ``<tool_call>``)."""

_WORD_TEXT = (
    "the agent answer is a tool call result value step plan check final number sum product "
    "think first then next so we need to compute add multiply total done good yes no maybe"
)
_WORDS = _WORD_TEXT.split()


def _forced_tool(tools: Sequence[Mapping[str, Any]], body: Mapping[str, Any]) -> str | None:
    """Name of the tool the turn must call, or None for a free turn."""
    choice = body.get("tool_choice", "auto")
    if not tools or choice == "none":
        return None
    if isinstance(choice, Mapping):
        function = choice.get("function")
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            return str(function["name"])
    first = tools[0].get("function", {}).get("name")
    return str(first) if first else None


def _example_args(tool: Mapping[str, Any], rng: random.Random) -> dict[str, Any]:
    """Arguments that satisfy the tool's JSON schema's required properties (enum first)."""
    params = tool.get("function", {}).get("parameters", {}) or {}
    props: Mapping[str, Any] = params.get("properties", {}) or {}
    args: dict[str, Any] = {}
    for name in params.get("required", list(props)):
        spec = props.get(name, {})
        if spec.get("enum"):
            args[name] = spec["enum"][0]
        elif spec.get("type") in ("integer", "number"):
            args[name] = rng.randint(1, 99)
        elif spec.get("type") == "boolean":
            args[name] = True
        else:
            args[name] = f"{rng.randint(1, 9)}*{rng.randint(1, 9)}"
    return args


def default_responder(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]],
    params: RequestParams,
) -> str:
    """Seeded pseudo-text; with tools, a tool call on a user turn and an answer after a result.

    * ``tool_choice`` named or ``required``: always a ``<tool_call>`` to that (or the first) tool.
    * ``auto`` (the default when tools are offered): a tool call when the last message is the
      user's, else ``"The answer is {last tool result}."``.
    * otherwise 6-20 words drawn from a small vocabulary by :meth:`RequestParams.rng`.
    """
    rng = params.rng("text")
    name = _forced_tool(tools, params.body)
    choice = params.body.get("tool_choice", "auto")
    last_role = messages[-1].get("role") if messages else None
    if name is not None and (choice != "auto" or last_role == "user"):
        tool = next((t for t in tools if t.get("function", {}).get("name") == name), tools[0])
        call = json.dumps({"name": name, "arguments": _example_args(tool, rng)})
        return f"{TOOL_CALL_OPEN}\n{call}\n{TOOL_CALL_CLOSE}"
    if name is not None and last_role == "tool":
        return f"The answer is {messages[-1].get('content')}."
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(6, 20)))


@dataclass(frozen=True, slots=True, kw_only=True)
class Generation:
    """One generated choice."""

    token_ids: tuple[int, ...]
    """Generated ids, end token included when the text ended naturally."""
    text: str
    """Decoded text (special tokens skipped)."""
    finish_reason: str
    """``stop`` (end token or stop string) or ``length`` (``max_tokens`` reached)."""
    stop_reason: str | None
    """The stop string that ended the text, if one did."""
    logprobs: tuple[float, ...]
    """Logprob of each generated id (deterministic)."""
    alternatives: tuple[tuple[tuple[int, float], ...], ...]
    """Per position, ``top`` other (id, logprob) candidates, most likely first (empty when no
    alternatives were asked for)."""

    def top(self, position: int, count: int) -> tuple[tuple[int, float], ...]:
        """The ``count`` best alternatives at ``position`` (fewer if fewer were drawn)."""
        return self.alternatives[position][:count] if self.alternatives else ()


def generate(
    tokenizer: ToyTokenizer,
    text: str,
    *,
    max_tokens: int,
    stop: Sequence[str],
    params: RequestParams,
    top: int = 0,
) -> Generation:
    """Turn responder text into tokens: cut at the first stop string, add the end token, cap at
    ``max_tokens``, and draw deterministic logprobs (and ``top`` alternatives per position)."""
    stop_reason: str | None = None
    cut = min((i for s in stop if s and (i := text.find(s)) >= 0), default=-1)
    if cut >= 0:
        stop_reason = next(s for s in stop if s and text.find(s) == cut)
        text = text[:cut]
    ids = tokenizer.encode(text)
    if stop_reason is None:
        ids.append(tokenizer.end_id)
    finish = "stop"
    if len(ids) > max_tokens:
        ids = ids[:max_tokens]
        finish, stop_reason = "length", None
    rng = params.rng("logprobs")
    logprobs = [-rng.uniform(0.01, 3.0) for _ in ids]
    alternatives: list[tuple[tuple[int, float], ...]] = []
    if top:
        alt_rng = params.rng("alternatives")
        for _ in ids:
            others = sorted((-alt_rng.uniform(0.01, 8.0) for _ in range(top)), reverse=True)
            alternatives.append(
                tuple((alt_rng.randrange(5, tokenizer.vocab_size), lp) for lp in others)
            )
    return Generation(
        token_ids=tuple(ids),
        text=tokenizer.decode(ids),
        finish_reason=finish,
        stop_reason=stop_reason,
        logprobs=tuple(logprobs),
        alternatives=tuple(alternatives),
    )


def tool_call_id(params: RequestParams, index: int) -> str:
    """vLLM-style tool call id, deterministic in the request (not its request id)."""
    return f"chatcmpl-tool-{params.rng(f'tool{index}').getrandbits(64):016x}"


# --------------------------------------------------------------------------- Hermes tool calls

_NAME = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*')
_TRAILING = re.compile(r"\s*\}?\s*\Z")


@dataclass(frozen=True, slots=True)
class ToolCallView:
    """What is known so far of one streamed tool call."""

    name: str | None
    """The function name once fully generated."""
    arguments: str
    """The arguments text that can be emitted so far (grows monotonically)."""


def _arguments_view(rest: str) -> str:
    """``rest`` minus a trailing ``}`` and whitespace that may close the outer object."""
    match = _TRAILING.search(rest)
    return rest[: match.start()] if match else rest


def stream_tool_view(text: str) -> tuple[str, list[ToolCallView]]:
    """Content and tool calls visible in a text *prefix*, as a streaming Hermes parser sees them.

    Content is the text before the first ``<tool_call>``. Every view's content and arguments
    extend the views of shorter prefixes, so a streamer emits only the difference.
    """
    head, sep, tail = text.partition(TOOL_CALL_OPEN)
    if not sep:
        return head, []
    views: list[ToolCallView] = []
    for segment in tail.split(TOOL_CALL_OPEN):
        body = segment.split(TOOL_CALL_CLOSE, 1)[0]
        match = _NAME.match(body)
        if match is None:
            views.append(ToolCallView(None, ""))
            continue
        name = json.loads(f'"{match.group(1)}"')
        views.append(ToolCallView(name, _arguments_view(body[match.end() :])))
    return head, views


def parse_tool_calls(text: str) -> tuple[str | None, list[tuple[str, str]]]:
    """Non-streaming Hermes parse: ``(content, [(name, arguments_json), ...])``.

    Only when every ``<tool_call>`` block is closed and holds valid JSON with a name and
    arguments; otherwise the whole text is content and there are no calls (as vLLM does).
    Content is the text before the first block, None when empty.
    """
    if TOOL_CALL_OPEN not in text:
        return text, []
    head, views = stream_tool_view(text)
    blocks = text.split(TOOL_CALL_OPEN)[1:]
    calls: list[tuple[str, str]] = []
    for block, view in zip(blocks, views, strict=True):
        if TOOL_CALL_CLOSE not in block or view.name is None:
            return text, []
        try:
            json.loads(block.split(TOOL_CALL_CLOSE, 1)[0])
            json.loads(view.arguments)
        except json.JSONDecodeError:
            return text, []
        calls.append((view.name, view.arguments))
    return head or None, calls
