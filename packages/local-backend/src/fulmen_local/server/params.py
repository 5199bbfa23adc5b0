"""Validation of OpenAI request bodies into :class:`ParsedRequest` objects.

Supported: ``temperature``, ``top_p``, ``n``, ``seed``, ``stop``, ``max_tokens`` /
``max_completion_tokens``, ``stream`` + ``stream_options.include_usage``, ``logprobs`` /
``top_logprobs``, and vLLM's ``return_token_ids``, ``stop_token_ids``, ``ignore_eos``,
``chat_template_kwargs``. Options the server cannot honour (penalties, logit bias, structured
output, echo, best_of) are refused with a 400 naming the field, rather than silently ignored.
Unknown fields are ignored, as OpenAI-compatible servers do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from fulmen_local.server.errors import ApiError, bad_request
from fulmen_local.server.sampling import (
    MAX_TOP_LOGPROBS,
    SamplingParams,
    SamplingParamsError,
)

__all__ = ["ParsedRequest", "parse_chat_request", "parse_completion_request", "sampling_params"]


@dataclass(slots=True, kw_only=True)
class ParsedRequest:
    """A validated chat or completions request (sampling still needs the prompt length)."""

    model: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    """Chat messages (chat only)."""
    prompts: list[str | list[int]] = field(default_factory=list)
    """Prompts (completions only): text or token ids."""
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    parse_tools: bool = False
    """True when tool calls in the output should become ``tool_calls``."""
    template_kwargs: dict[str, Any] = field(default_factory=dict)
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    stream: bool = False
    include_usage: bool = False
    logprobs: bool = False
    top_logprobs: int = 0
    return_token_ids: bool = False


def _list(value: object) -> list[Any] | None:
    """``value`` as a JSON array, or None when it is not one."""
    return cast("list[Any]", value) if isinstance(value, list) else None


def _dict(value: object) -> dict[str, Any] | None:
    """``value`` as a JSON object, or None when it is not one."""
    return cast("dict[str, Any]", value) if isinstance(value, dict) else None


def _get(body: Mapping[str, Any], name: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise bad_request(f"{name} must be {what}, got {value!r}", name)
    if not isinstance(value, kind):
        raise bad_request(f"{name} must be {what}, got {type(value).__name__}", name)
    return value


def _refuse_unsupported(body: Mapping[str, Any]) -> None:
    for name in ("presence_penalty", "frequency_penalty"):
        if body.get(name) not in (None, 0, 0.0):
            raise bad_request(f"{name} is not supported by this server; leave it unset or 0", name)
    if body.get("repetition_penalty") not in (None, 1, 1.0):
        raise bad_request(
            "repetition_penalty is not supported; leave it unset or 1", "repetition_penalty"
        )
    if body.get("logit_bias"):
        raise bad_request("logit_bias is not supported by this server", "logit_bias")
    fmt = body.get("response_format")
    if fmt is not None and not (isinstance(fmt, Mapping) and fmt.get("type") == "text"):
        raise bad_request("response_format other than text is not supported", "response_format")
    if body.get("top_k") not in (None, 0, -1):
        raise bad_request("top_k is not supported; use top_p", "top_k")
    if body.get("best_of") not in (None, 1):
        raise bad_request("best_of is not supported; use n", "best_of")
    if body.get("echo"):
        raise bad_request("echo is not supported", "echo")


def _common(body: Mapping[str, Any]) -> ParsedRequest:
    if not isinstance(body, Mapping):  # pyright: ignore[reportUnnecessaryIsInstance]
        raise bad_request("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("model is required (the served model's name, see /v1/models)", "model")
    _refuse_unsupported(body)
    req = ParsedRequest(model=model)
    max_tokens = _get(body, "max_completion_tokens", int, "an integer")
    if max_tokens is None:
        max_tokens = _get(body, "max_tokens", int, "an integer")
    if max_tokens is not None and max_tokens < 1:
        raise bad_request(f"max_tokens must be at least 1, got {max_tokens}", "max_tokens")
    req.max_tokens = max_tokens
    temperature = _get(body, "temperature", (int, float), "a number")
    req.temperature = 1.0 if temperature is None else float(temperature)
    top_p = _get(body, "top_p", (int, float), "a number")
    req.top_p = 1.0 if top_p is None else float(top_p)
    n = _get(body, "n", int, "an integer")
    req.n = 1 if n is None else n
    req.seed = _get(body, "seed", int, "an integer")
    stop, stops = body.get("stop"), _list(body.get("stop"))
    if isinstance(stop, str):
        req.stop = (stop,)
    elif stops is not None and all(isinstance(s, str) for s in stops):
        req.stop = tuple(stops)
    elif stop is not None:
        raise bad_request("stop must be a string or a list of strings", "stop")
    if body.get("stop_token_ids") is not None:
        ids = _list(body.get("stop_token_ids"))
        if ids is None or not all(_is_ids(t) for t in ids):
            raise bad_request("stop_token_ids must be a list of token ids", "stop_token_ids")
        req.stop_token_ids = tuple(ids)
    req.ignore_eos = bool(_get(body, "ignore_eos", bool, "a boolean"))
    req.stream = bool(_get(body, "stream", bool, "a boolean"))
    options = _get(body, "stream_options", dict, "an object")
    req.include_usage = bool(options and options.get("include_usage"))
    req.return_token_ids = bool(_get(body, "return_token_ids", bool, "a boolean"))
    return req


def parse_chat_request(body: Mapping[str, Any]) -> ParsedRequest:
    """Validate a ``/v1/chat/completions`` body.

    Raises:
        ApiError: 400 naming the invalid field.
    """
    req = _common(body)
    messages = _list(body.get("messages"))
    if not messages:
        raise bad_request("messages must be a non-empty list of chat messages", "messages")
    for i, m in enumerate(messages):
        message = _dict(m)
        if message is None or not isinstance(message.get("role"), str):
            raise bad_request(f"messages[{i}] must be an object with a string role", "messages")
    req.messages = messages
    if body.get("tools") is not None:
        tools = _list(body.get("tools"))
        if tools is None or not all(_is_tool(t) for t in tools):
            raise bad_request(
                'tools must be a list of {"type": "function", "function": {"name": ...}}', "tools"
            )
        req.tools = tools or None
    choice = body.get("tool_choice")
    function = (_dict(choice) or {}).get("function")  # a named choice: {"function": {...}}
    if choice is not None and choice not in ("none", "auto", "required") and not _dict(function):
        raise bad_request(
            'tool_choice must be "none", "auto", "required" or a named function', "tool_choice"
        )
    req.tool_choice = choice
    req.parse_tools = req.tools is not None and choice != "none"
    kwargs = _get(body, "chat_template_kwargs", dict, "an object")
    req.template_kwargs = dict(kwargs or {})
    req.logprobs = bool(_get(body, "logprobs", bool, "a boolean"))
    top = _get(body, "top_logprobs", int, "an integer")
    if top is not None:
        if not 0 <= top <= MAX_TOP_LOGPROBS:
            raise bad_request(
                f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}", "top_logprobs"
            )
        if top > 0 and not req.logprobs:
            raise bad_request("top_logprobs needs logprobs: true", "top_logprobs")
        req.top_logprobs = top
    return req


def _is_tool(tool: object) -> bool:
    function = _dict((_dict(tool) or {}).get("function"))
    return function is not None and isinstance(function.get("name"), str)


def parse_completion_request(body: Mapping[str, Any]) -> ParsedRequest:
    """Validate a ``/v1/completions`` body (``prompt``: text, ids, or a list of either).

    Raises:
        ApiError: 400 naming the invalid field.
    """
    req = _common(body)
    prompt, items = body.get("prompt"), _list(body.get("prompt"))
    if isinstance(prompt, str):
        req.prompts = [prompt]
    elif items and all(_is_ids(t) for t in items):
        req.prompts = [items]
    elif items and all(isinstance(p, str) or _is_id_list(p) for p in items):
        req.prompts = items
    else:
        raise bad_request(
            "prompt must be a non-empty string, token id list, or list of those", "prompt"
        )
    logprobs = _get(body, "logprobs", int, "an integer")
    if logprobs is not None:
        if not 0 <= logprobs <= MAX_TOP_LOGPROBS:
            raise bad_request(f"logprobs must be between 0 and {MAX_TOP_LOGPROBS}", "logprobs")
        req.logprobs, req.top_logprobs = True, logprobs
    return req


def _is_ids(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_id_list(value: object) -> bool:
    items = _list(value)
    return bool(items) and all(_is_ids(t) for t in items or ())


def sampling_params(
    req: ParsedRequest, *, prompt_tokens: int, max_model_len: int
) -> SamplingParams:
    """Build the engine's parameters, checking the context length like vLLM does.

    ``max_tokens`` defaults to the rest of the context. Unlike this server, vLLM 0.32 does not
    refuse a prompt plus ``max_tokens`` beyond the context: it shortens ``max_tokens`` to the
    room left and may end with ``finish_reason: "length"`` (``tests/integration/test_real_vllm.py``
    shows both). The embedded server refuses with a clear 400 instead (issue #7), so an agent
    run against it learns of the overflow rather than getting silently shortened output; agents
    that must run on both should size ``max_tokens`` to the room left, as the examples do.

    Raises:
        ApiError: 400 when the prompt plus ``max_tokens`` exceeds ``max_model_len`` (message
            and ``param`` shaped like vLLM's), or a parameter is out of range.
    """
    kind = "messages" if req.messages else "prompt"
    if prompt_tokens >= max_model_len:
        raise bad_request(
            f"This model's maximum context length is {max_model_len} tokens. However, your "
            f"request has {prompt_tokens} input tokens. Please reduce the length of the input "
            f"{kind}. (parameter=input_tokens, value={prompt_tokens})",
            "input_tokens",
        )
    max_tokens = req.max_tokens if req.max_tokens is not None else max_model_len - prompt_tokens
    if max_tokens > max_model_len:
        raise bad_request(
            f"max_tokens={max_tokens} cannot be greater than max_model_len={max_model_len}. "
            f"Please request fewer output tokens. (parameter=max_tokens, value={max_tokens})",
            "max_tokens",
        )
    if prompt_tokens + max_tokens > max_model_len:
        raise bad_request(
            f"This model's maximum context length is {max_model_len} tokens. However, you "
            f"requested {prompt_tokens + max_tokens} tokens ({prompt_tokens} in the input "
            f"{kind}, {max_tokens} in the completion). Please reduce the length of the input "
            f"{kind} or max_tokens. (parameter=max_tokens, value={max_tokens})",
            "max_tokens",
        )
    try:
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=req.temperature,
            top_p=req.top_p,
            n=req.n,
            seed=req.seed,
            stop=req.stop,
            stop_token_ids=req.stop_token_ids,
            ignore_eos=req.ignore_eos,
            top_logprobs=req.top_logprobs,
        )
    except SamplingParamsError as exc:
        raise ApiError(400, str(exc), param=exc.param) from exc
