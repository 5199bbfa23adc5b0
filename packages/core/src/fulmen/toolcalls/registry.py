"""Tool-call parsers by name (vLLM's ``--tool-call-parser`` names) and per model family."""

from __future__ import annotations

from collections.abc import Callable

from fulmen.errors import ConfigError
from fulmen.toolcalls.base import ToolParser
from fulmen.toolcalls.hermes import HermesToolParser
from fulmen.toolcalls.llama3_json import Llama3JsonToolParser
from fulmen.toolcalls.mistral import MistralToolParser
from fulmen.toolcalls.phi4_mini_json import Phi4MiniJsonToolParser
from fulmen.toolcalls.pythonic import PythonicToolParser

__all__ = [
    "TOOL_PARSER_NAMES",
    "UnknownToolParserError",
    "default_tool_parser",
    "get_tool_parser",
]

_PARSERS: dict[str, Callable[[], ToolParser]] = {
    "hermes": HermesToolParser,
    "llama3_json": Llama3JsonToolParser,
    "mistral": MistralToolParser,
    "phi4_mini_json": Phi4MiniJsonToolParser,
    "pythonic": PythonicToolParser,
}

TOOL_PARSER_NAMES: tuple[str, ...] = tuple(sorted(_PARSERS))
"""Every parser name :func:`get_tool_parser` accepts."""

_FAMILY_DEFAULTS: dict[str, str | None] = {
    "qwen2": "hermes",
    "qwen2_moe": "hermes",
    "qwen3": "hermes",
    "qwen3_moe": "hermes",
    "llama": "llama3_json",
    "mistral": "mistral",
    # Gemma's chat templates have no tools; Phi-3's neither (Phi-4-mini shares model_type
    # "phi3": set phi4_mini_json explicitly for it).
    "gemma": None,
    "gemma2": None,
    "gemma3": None,
    "gemma3_text": None,
    "phi3": None,
}


class UnknownToolParserError(ConfigError):
    """A tool-call parser name that is not registered (the message names the valid ones)."""


def get_tool_parser(name: str) -> ToolParser:
    """The parser registered as ``name``.

    Raises:
        UnknownToolParserError: no such parser; the message lists the valid names.
    """
    factory = _PARSERS.get(name)
    if factory is None:
        raise UnknownToolParserError(
            f"unknown tool-call parser {name!r}: expected one of {', '.join(TOOL_PARSER_NAMES)}"
        )
    return factory()


# Call markup a chat template writes for assistant tool calls, and the parser reading it.
_TEMPLATE_MARKUP: tuple[tuple[str, str], ...] = (
    ("<tool_call>", "hermes"),
    ("functools[", "phi4_mini_json"),
    ("[TOOL_CALLS]", "mistral"),
    ("<|python_tag|>", "llama3_json"),
)


def default_tool_parser(model_type: str, chat_template: str | None = None) -> str | None:
    """The parser a model family's checkpoints use; None when it has no tool-call format.

    By ``config.model_type`` (``qwen2``/``qwen3``: ``hermes``, ``llama``: ``llama3_json``,
    Gemma and Phi-3: None, unknown: None). When ``chat_template`` is given and writes one of
    the known call markups (``<tool_call>``, ``functools[``, ``[TOOL_CALLS]``,
    ``<|python_tag|>``), that markup decides instead: one ``model_type`` covers checkpoints
    with different formats (SmolLM2 and fulmen's own models are ``llama`` with Hermes calls;
    Phi-4-mini is ``phi3``).
    """
    if chat_template:
        for markup, parser in _TEMPLATE_MARKUP:
            if markup in chat_template:
                return parser
    return _FAMILY_DEFAULTS.get(model_type)
