"""aiohttp routes: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``, ``/health``.

Every response carries the header ``X-Fulmen-Policy-Version`` (generation responses: the
version that produced them, also in the body as ``policy_version``). An ``X-Request-Id``
request header becomes the response id (``chatcmpl-{id}`` / ``cmpl-{id}``) and is echoed.
Bodies, chunks and errors are in vLLM's wire format (:mod:`fulmen.wire`, via :mod:`.responses`
and :mod:`.errors`).

Several LoRA adapters (an engine built with ``adapters``): like vLLM's ``--lora-modules``, each
adapter is served as a model of its own name beside the base (``/v1/models`` lists them with the
base as ``parent``); a request's ``model`` picks its adapter, the base's name the frozen base.
The version in the header and body is the version of the adapter that generated the response.

Tool calls: with a tool-call parser (vLLM's ``--tool-call-parser`` names, see
:mod:`.tool_parsers`), a chat request with ``tools`` (and ``tool_choice`` other than ``none``)
gets its calls parsed into ``tool_calls``, as vLLM does with ``--enable-auto-tool-choice``.
Without a parser, or when the chat template does not render tools, such a request is a 400
naming the fix.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web
from fulmen import wire
from fulmen.policies import BASE_ADAPTER
from fulmen.wire import POLICY_VERSION_HEADER
from transformers import PreTrainedTokenizerBase

from fulmen_local.server.engine import GenerationEngine
from fulmen_local.server.errors import ApiError, bad_request
from fulmen_local.server.outputs import OutputCollector, SequenceOutput
from fulmen_local.server.params import (
    ParsedRequest,
    parse_chat_request,
    parse_completion_request,
    sampling_params,
)
from fulmen_local.server.responses import ResponseBuilder
from fulmen_local.server.sse import Submissions, stream_chat, stream_completion
from fulmen_local.server.template import render_chat_prompt, template_supports_tools
from fulmen_local.server.tokens import TokenTexts
from fulmen_local.server.tool_parsers import TOOL_PARSER_NAMES, ToolCallDecoding, get_tool_parser

__all__ = ["POLICY_VERSION_HEADER", "build_app"]

_ENGINE = web.AppKey("engine", GenerationEngine)
_TOKENIZER = web.AppKey("tokenizer", PreTrainedTokenizerBase)
_NAME = web.AppKey("model_name", str)
_TEXTS = web.AppKey("token_texts", TokenTexts)


@dataclass(frozen=True, slots=True)
class _Tools:
    """How this server handles requests with tools."""

    decoding: ToolCallDecoding | None
    """The tool-call parser bound to the tokenizer; None: the server has no parser."""
    template_renders_tools: bool


_TOOLS = web.AppKey("tools", _Tools)


def build_app(
    engine: GenerationEngine,
    tokenizer: PreTrainedTokenizerBase,
    *,
    model_name: str,
    tool_parser: str | None = "hermes",
) -> web.Application:
    """The aiohttp application serving ``engine`` as ``model_name`` (engine started by caller).

    Args:
        tool_parser: The tool-call format (vLLM's ``--tool-call-parser`` name); None: requests
            with tools are refused.

    Raises:
        UnknownToolParserError: ``tool_parser`` is not a registered name.
    """
    decoding = (
        ToolCallDecoding(get_tool_parser(tool_parser), tokenizer)
        if tool_parser is not None
        else None
    )
    app = web.Application(middlewares=[_errors_and_headers], client_max_size=64 * 1024 * 1024)
    app[_ENGINE] = engine
    app[_TOKENIZER] = tokenizer
    app[_NAME] = model_name
    app[_TEXTS] = TokenTexts(tokenizer)
    app[_TOOLS] = _Tools(decoding, decoding is not None and template_supports_tools(tokenizer))
    app.router.add_post("/v1/chat/completions", _chat)
    app.router.add_post("/v1/completions", _completions)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/health", _health)
    app.router.add_post("/tokenize", _tokenize)
    return app


@web.middleware
async def _errors_and_headers(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    engine = request.app[_ENGINE]
    try:
        response = await handler(request)
    except ApiError as exc:
        response = web.json_response(exc.body(), status=exc.status, dumps=wire.dumps)
    except web.HTTPException as exc:
        err = ApiError(exc.status, exc.reason)
        response = web.json_response(err.body(), status=exc.status, dumps=wire.dumps)
    if not response.prepared:
        response.headers.setdefault(POLICY_VERSION_HEADER, str(engine.policy_version))
        if "X-Request-Id" in request.headers:
            response.headers.setdefault("X-Request-Id", request.headers["X-Request-Id"])
    return response


async def _health(request: web.Request) -> web.Response:
    engine = request.app[_ENGINE]
    status = 200 if engine.running else 503
    body = {
        "status": "ok" if engine.running else "stopped",
        "policy_version": engine.policy_version,
    }
    return web.json_response(body, status=status, dumps=wire.dumps)


async def _models(request: web.Request) -> web.Response:
    name, engine = request.app[_NAME], request.app[_ENGINE]
    body = wire.model_list(name, engine.max_model_len, root=name, owned_by="fulmen")
    base = body["data"][0]
    body["data"] += [{**base, "id": a, "root": a, "parent": name} for a in engine.adapters]
    return web.json_response(body, dumps=wire.dumps)


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad_request(f"the request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    return cast("dict[str, Any]", body)


def _adapter_for(request: web.Request, req: ParsedRequest) -> str | None:
    """The adapter a request's ``model`` names (None: the engine serves no adapters).

    Raises:
        ApiError: 404 for a name this server does not serve.
    """
    name, adapters = request.app[_NAME], request.app[_ENGINE].adapters
    if req.model == name:
        return BASE_ADAPTER if adapters else None
    if req.model in adapters:
        return req.model
    aliases = ", ".join((name, *adapters))
    raise ApiError(
        404, f"The model `{req.model}` does not exist. Valid aliases: {aliases}.", param="model"
    )


def _tool_decoding(request: web.Request, req: ParsedRequest) -> ToolCallDecoding | None:
    """The parser for this request's output; None when it asks for no tool calls.

    Raises:
        ApiError: 400 when the request has tools but the server cannot handle them.
    """
    if not req.parse_tools:
        return None
    tools = request.app[_TOOLS]
    if tools.decoding is None:
        raise bad_request(
            "this request has tools, but the server has no tool-call parser, so tool calls "
            "would come back as plain text; set one (fulmen config: [local] tool_parser; "
            "python -m fulmen_local.server: --tool-call-parser) to one of "
            f"{', '.join(TOOL_PARSER_NAMES)}, or leave tools out",
            "tools",
        )
    if not tools.template_renders_tools:
        raise bad_request(
            f"this request has tools, but the chat template of `{request.app[_NAME]}` does not "
            "render tools, so the model would never see them; serve a model whose chat "
            "template supports tools, or leave tools out (the server's tool-call parser, "
            f"[local] tool_parser / --tool-call-parser, is {tools.decoding.parser.name})",
            "tools",
        )
    return tools.decoding


def _request_id(request: web.Request) -> str:
    return request.headers.get("X-Request-Id") or uuid.uuid4().hex


def _failed(outputs: tuple[SequenceOutput, ...]) -> None:
    for out in outputs:
        if out.finish_reason == "error":
            raise ApiError(500, f"generation failed: {out.error}")
        if out.finish_reason == "abort":
            raise ApiError(503, "the generation engine stopped before the request finished")


async def _tokenize(request: web.Request) -> web.Response:
    """vLLM's ``POST /tokenize``: ``messages`` (rendered with the chat template; ``tools``,
    ``add_generation_prompt`` default true, ``chat_template_kwargs``) or ``prompt`` (text,
    ``add_special_tokens`` default true) to ``{"count", "max_model_len", "tokens"}``. The
    gateway's exact-continuity mode renders new messages with it."""
    engine, tokenizer = request.app[_ENGINE], request.app[_TOKENIZER]
    body = await _body(request)
    messages, prompt = body.get("messages"), body.get("prompt")
    if isinstance(messages, list) and messages:
        tools, kwargs = body.get("tools"), body.get("chat_template_kwargs")
        generation = body.get("add_generation_prompt", True)
        if not isinstance(generation, bool):
            raise bad_request("add_generation_prompt must be a boolean", "add_generation_prompt")
        ids = render_chat_prompt(
            tokenizer,
            cast("list[dict[str, Any]]", messages),
            tools=cast("list[dict[str, Any]]", tools) if isinstance(tools, list) else None,
            template_kwargs=cast("dict[str, Any]", kwargs) if isinstance(kwargs, dict) else None,
            add_generation_prompt=generation,
        )
    elif isinstance(prompt, str):
        special = body.get("add_special_tokens", True)
        ids = [int(t) for t in tokenizer(prompt, add_special_tokens=special is True)["input_ids"]]
    else:
        raise bad_request("/tokenize needs a non-empty 'messages' list or a 'prompt' string", "messages")
    body = {"count": len(ids), "max_model_len": engine.max_model_len, "tokens": ids}
    return web.json_response(body, dumps=wire.dumps)


async def _chat(request: web.Request) -> web.StreamResponse:
    engine, tokenizer = request.app[_ENGINE], request.app[_TOKENIZER]
    req = parse_chat_request(await _body(request))
    adapter = _adapter_for(request, req)
    tools = _tool_decoding(request, req)
    prompt = render_chat_prompt(
        tokenizer, req.messages, tools=req.tools, template_kwargs=req.template_kwargs
    )
    params = sampling_params(req, prompt_tokens=len(prompt), max_model_len=engine.max_model_len)
    rid = _request_id(request)
    subs = Submissions(engine)
    subs.submit(0, prompt, params, rid, adapter)
    try:
        if req.stream:
            return await stream_chat(
                request, req, subs, tuple(prompt), _builders(req.model, request, f"chatcmpl-{rid}"),
                tools,
            )
        collector = OutputCollector(params.n)
        async for _, event in subs.events():
            collector.add(event)
    finally:
        subs.cancel()
    outputs = collector.outputs()
    _failed(outputs)
    version = (
        collector.policy_version
        if collector.policy_version is not None
        else engine.version_of(adapter)
    )
    build = _builder(req.model, request, f"chatcmpl-{rid}", version)
    choices: list[dict[str, Any]] = []
    for out in outputs:
        parsed = tools.parse(out, req.stop) if tools is not None else None
        choices.append(
            build.chat_choice(
                out,
                content=parsed.content if parsed else out.text,
                tool_calls=list(parsed.tool_calls) if parsed else None,
                logprobs=req.logprobs,
                token_ids=req.return_token_ids,
            )
        )
    completion_tokens = sum(len(o.token_ids) for o in outputs)
    body = build.envelope.chat_completion(
        choices,
        usage=wire.usage(len(prompt), completion_tokens),
        prompt_token_ids=prompt if req.return_token_ids else None,
    )
    return _json_response(body, version)


def _builder(model: str, request: web.Request, response_id: str, version: int) -> ResponseBuilder:
    return ResponseBuilder(
        request.app[_TEXTS],
        response_id=response_id,
        model=model,
        created=int(time.time()),
        policy_version=version,
    )


def _builders(
    model: str, request: web.Request, response_id: str
) -> Callable[[int], ResponseBuilder]:
    def make(version: int) -> ResponseBuilder:
        return _builder(model, request, response_id, version)

    return make


def _json_response(body: dict[str, Any], version: int) -> web.Response:
    response = web.json_response(body, dumps=wire.dumps)
    response.headers[POLICY_VERSION_HEADER] = str(version)
    return response


async def _completions(request: web.Request) -> web.StreamResponse:
    engine, tokenizer = request.app[_ENGINE], request.app[_TOKENIZER]
    req = parse_completion_request(await _body(request))
    adapter = _adapter_for(request, req)
    prompts: list[list[int]] = []
    for p in req.prompts:
        ids = tokenizer(p, add_special_tokens=True)["input_ids"] if isinstance(p, str) else p
        prompts.append([int(t) for t in ids])
    all_params = [
        sampling_params(req, prompt_tokens=len(p), max_model_len=engine.max_model_len)
        for p in prompts
    ]
    rid = _request_id(request)
    subs = Submissions(engine)
    try:
        for key, (prompt, params) in enumerate(zip(prompts, all_params, strict=True)):
            subs.submit(key, prompt, params, f"{rid}-{key}", adapter)
        if req.stream:
            return await stream_completion(
                request, req, subs, prompts, _builders(req.model, request, f"cmpl-{rid}")
            )
        collectors = [OutputCollector(req.n) for _ in prompts]
        async for key, event in subs.events():
            collectors[key].add(event)
    finally:
        subs.cancel()
    results = [c.outputs() for c in collectors]
    for outs in results:
        _failed(outs)
    found = collectors[0].policy_version
    version = found if found is not None else engine.version_of(adapter)
    build = _builder(req.model, request, f"cmpl-{rid}", version)
    choices = [
        build.completion_choice(
            out,
            key * req.n + out.index,
            tuple(prompts[key]),
            logprobs=req.logprobs,
            token_ids=req.return_token_ids,
        )
        for key, outs in enumerate(results)
        for out in outs
    ]
    completion_tokens = sum(len(o.token_ids) for outs in results for o in outs)
    body = build.envelope.completion(
        choices, usage=wire.usage(sum(len(p) for p in prompts), completion_tokens)
    )
    return _json_response(body, version)
