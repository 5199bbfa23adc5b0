"""``pythonic``: a Python list of calls, ``[get_weather(city="Paris"), now()]`` (Llama 3.2/4).

The completion (after whitespace) must be exactly one list of calls of plain names with
keyword arguments whose values are literals (strings, numbers, booleans, None, and lists,
tuples and dicts of those). It is read with :mod:`ast` — never evaluated. Anything else
(positional arguments, expressions, an empty list, text after the list) is plain content.
"""

from __future__ import annotations

import ast
import json
import warnings
from typing import Any

from fulmen.toolcalls.base import (
    ParsedToolCalls,
    find_call_start,
    openai_tool_call,
)

__all__ = ["PythonicToolParser"]


class PythonicToolParser:
    """Pythonic tool calls (see the module docstring)."""

    name = "pythonic"
    start_markers: tuple[str, ...] = ()
    openings = ("[",)
    special_markers: tuple[str, ...] = ()

    def parse(self, text: str) -> ParsedToolCalls | None:
        """The list's calls; None when the text is not such a list."""
        start = find_call_start(self, text)
        if start is None:
            return None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. SyntaxWarning on odd string escapes
                tree = ast.parse(text[start:].strip(), mode="eval")
            calls = _calls(tree.body)
        except (SyntaxError, ValueError, TypeError, RecursionError, MemoryError):
            return None
        if not calls:
            return None
        return ParsedToolCalls(content=None, tool_calls=tuple(calls), start=start)


def _calls(node: ast.expr) -> list[dict[str, Any]]:
    """The OpenAI calls of a list-of-calls node.

    Raises:
        ValueError: the node is not a list of ``name(key=literal, ...)`` calls.
    """
    if not isinstance(node, ast.List):
        raise ValueError("not a list")
    calls: list[dict[str, Any]] = []
    for item in node.elts:
        if not isinstance(item, ast.Call) or not isinstance(item.func, ast.Name) or item.args:
            raise ValueError("not a call of a plain name with keyword arguments")
        arguments: dict[str, Any] = {}
        for keyword in item.keywords:
            if keyword.arg is None or keyword.arg in arguments:
                raise ValueError("**kwargs or a repeated keyword")
            arguments[keyword.arg] = ast.literal_eval(keyword.value)
        # allow_nan=False: NaN/Infinity are not JSON; sets, bytes, complex raise TypeError
        dumped = json.dumps(arguments, ensure_ascii=False, allow_nan=False)
        calls.append(openai_tool_call(item.func.id, dumped))
    return calls
