"""Embedded inference server: a transformers causal LM behind vLLM's OpenAI wire format.

* :class:`GenerationEngine` — continuous batching on one worker thread, per-sequence sampling,
  raw logprobs, weight hot swap with a policy version.
* :class:`InferenceServer` — the engine plus aiohttp routes ``/v1/chat/completions``,
  ``/v1/completions``, ``/v1/models``, ``/health``.
* Tool-call parsers named like vLLM's ``--tool-call-parser`` (:func:`get_tool_parser`,
  :func:`default_tool_parser` per model family, :func:`template_supports_tools`).

Run one by hand with ``python -m fulmen_local.server MODEL_DIR --port 8000``.
"""

from __future__ import annotations

from fulmen_local.server.app import POLICY_VERSION_HEADER, build_app
from fulmen_local.server.engine import (
    ContextLengthError,
    EngineStats,
    EngineStoppedError,
    GenerationEngine,
    GenerationHandle,
    WeightUpdate,
)
from fulmen_local.server.outputs import GenerationResult, SequenceOutput, TokenEvent
from fulmen_local.server.sampling import SamplingParams, SamplingParamsError
from fulmen_local.server.service import InferenceServer
from fulmen_local.server.template import template_supports_tools
from fulmen_local.server.tool_parsers import (
    TOOL_PARSER_NAMES,
    ParsedToolCalls,
    ToolParser,
    UnknownToolParserError,
    default_tool_parser,
    get_tool_parser,
)

__all__ = [
    "POLICY_VERSION_HEADER",
    "TOOL_PARSER_NAMES",
    "ContextLengthError",
    "EngineStats",
    "EngineStoppedError",
    "GenerationEngine",
    "GenerationHandle",
    "GenerationResult",
    "InferenceServer",
    "ParsedToolCalls",
    "SamplingParams",
    "SamplingParamsError",
    "SequenceOutput",
    "TokenEvent",
    "ToolParser",
    "UnknownToolParserError",
    "WeightUpdate",
    "build_app",
    "default_tool_parser",
    "get_tool_parser",
    "template_supports_tools",
]
