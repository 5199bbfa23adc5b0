"""Tool-call parsers, named like vLLM's ``--tool-call-parser``: shared by the embedded server
(``fulmen_local``) and the gateway's exact-continuity mode, which turns a token-in completion
back into a chat answer (:mod:`fulmen.gateway.continuity`).

* ``hermes`` — ``<tool_call>{json}</tool_call>`` (Qwen2/2.5/3, Hermes);
* ``llama3_json`` — ``<|python_tag|>{"name": ..., "parameters": {...}}; {...}`` (Llama 3.x);
* ``pythonic`` — ``[f(a=1), g(b="x")]`` (Llama 3.2/4 pythonic prompts), read with ``ast``;
* ``phi4_mini_json`` — ``functools[{"name": ..., "arguments": {...}}]`` (Phi-4-mini);
* ``mistral`` — ``[TOOL_CALLS][{...}]`` or ``[TOOL_CALLS]name{...}`` (Mistral).

:func:`get_tool_parser` builds one by name, :func:`default_tool_parser` names a model family's
default. A parser (:class:`ToolParser`) turns a finished completion into content plus OpenAI
``tool_calls`` (:class:`ParsedToolCalls`) or None; :class:`ToolCallStreamFilter` streams the
content before a call starts. Pure Python (no tokenizer): the embedded server connects a parser
to its tokenizer in ``fulmen_local.server.tool_parsers``.
"""

from __future__ import annotations

from fulmen.toolcalls.base import ParsedToolCalls, ToolParser, new_tool_call_id
from fulmen.toolcalls.registry import (
    TOOL_PARSER_NAMES,
    UnknownToolParserError,
    default_tool_parser,
    get_tool_parser,
)
from fulmen.toolcalls.stream import ToolCallStreamFilter

__all__ = [
    "TOOL_PARSER_NAMES",
    "ParsedToolCalls",
    "ToolCallStreamFilter",
    "ToolParser",
    "UnknownToolParserError",
    "default_tool_parser",
    "get_tool_parser",
    "new_tool_call_id",
]
