"""Tool-call parsing in the embedded server.

The parsers themselves (``hermes``, ``llama3_json``, ``pythonic``, ``phi4_mini_json``,
``mistral``; :func:`get_tool_parser`, :func:`default_tool_parser`, :class:`ToolCallStreamFilter`)
live in core, :mod:`fulmen.toolcalls`, shared with the gateway; they are re-exported here.
:class:`ToolCallDecoding` connects a parser to a tokenizer (the special tokens the parser must
see) and to the engine's outputs.
"""

from __future__ import annotations

from fulmen.toolcalls import (
    TOOL_PARSER_NAMES,
    ParsedToolCalls,
    ToolCallStreamFilter,
    ToolParser,
    UnknownToolParserError,
    default_tool_parser,
    get_tool_parser,
    new_tool_call_id,
)

from fulmen_local.server.tool_parsers.decoding import ChoiceToolCalls, ToolCallDecoding

__all__ = [
    "TOOL_PARSER_NAMES",
    "ChoiceToolCalls",
    "ParsedToolCalls",
    "ToolCallDecoding",
    "ToolCallStreamFilter",
    "ToolParser",
    "UnknownToolParserError",
    "default_tool_parser",
    "get_tool_parser",
    "new_tool_call_id",
]
