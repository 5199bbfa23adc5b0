"""Text the families' tokenizers are trained on, generated from a seed.

The tokenizers only need to cover what the tests and the calculator task send through them, so
the corpus is small and made up on the spot: arithmetic questions and answers, tool calls and
tool schemas as JSON in the families' formats, and English filler sentences. The same seed
always gives the same lines, so trained tokenizers are identical from run to run.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any

__all__ = ["training_corpus"]

_WORD_TEXT = (
    "the a an and or but if then so because when while after before of to in on at by for "
    "with from about into over under between through what which who how why where is are was "
    "were be been being have has had do does did can could will would should may might must "
    "answer question number result value total sum product difference quotient tool call "
    "function name arguments parameters expression calculator search weather city date time "
    "please compute evaluate return respond reply user assistant system model message content "
    "you your we our they their it its this that these those here there yes no not only also "
    "first second third last next step think reason check again right wrong correct error "
    "true false null list object string integer table query database row column text word "
    "help helpful useful simple small large good new old same other many much more most few "
    "add subtract multiply divide times plus minus equals given following format json output"
)
_WORDS = tuple(_WORD_TEXT.split())
_TOOLS = ("calculator", "search", "lookup", "get_weather", "sql_query", "read_file")
_OPS = (("+", "plus"), ("-", "minus"), ("*", "times"), ("/", "divided by"))


def _arithmetic(rng: random.Random) -> list[str]:
    a, b = rng.randint(0, 999), rng.randint(1, 999)
    symbol, word = rng.choice(_OPS)
    value = {"+": a + b, "-": a - b, "*": a * b, "/": a // b}[symbol]
    return [
        f"What is {a}{symbol}{b}?",
        f"What is {a} {word} {b}?",
        f"The answer is {value}.",
        f"{a} {symbol} {b} = {value}",
        str(value),
    ]


def _arguments(rng: random.Random, tool: str) -> dict[str, Any]:
    if tool == "calculator":
        symbol, _ = rng.choice(_OPS)
        return {"expression": f"{rng.randint(0, 999)}{symbol}{rng.randint(1, 999)}"}
    if tool == "sql_query":
        return {"query": f"SELECT name FROM users WHERE id = {rng.randint(1, 99)}"}
    return {"query": " ".join(rng.choices(_WORDS, k=rng.randint(1, 4)))}


def _tool_calls(rng: random.Random) -> list[str]:
    tool = rng.choice(_TOOLS)
    args = _arguments(rng, tool)
    call = {"name": tool, "arguments": args}
    return [
        json.dumps(call),
        f"<tool_call>\n{json.dumps(call)}\n</tool_call>",
        json.dumps({"name": tool, "parameters": args}),
        f"functools[{json.dumps([call])}]",
        json.dumps({"id": f"call_{rng.getrandbits(48):012x}", "type": "function",
                    "function": {"name": tool, "arguments": json.dumps(args)}}),
    ]


def _schema(tool: str) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": tool,
            "description": f"Run the {tool.replace('_', ' ')} tool",
            "parameters": {
                "type": "object",
                "properties": {"expression": {"type": "string", "description": "the input"}},
                "required": ["expression"],
            },
        },
    }


def _sentence(rng: random.Random) -> str:
    words = rng.choices(_WORDS, k=rng.randint(4, 14))
    return " ".join(words).capitalize() + rng.choice((".", "?", "!", ":"))


def training_corpus(extra: Sequence[str] = (), *, seed: int = 0, size: int = 600) -> list[str]:
    """Lines of training text: ``size`` rounds of generated text, plus ``extra`` (repeated so
    a family's fixed template text becomes whole tokens)."""
    rng = random.Random(seed)
    lines: list[str] = []
    for tool in _TOOLS:
        lines += [json.dumps(_schema(tool)), json.dumps(_schema(tool), indent=4)] * 4
    for _ in range(size):
        lines += _arithmetic(rng)
        lines += _tool_calls(rng)
        lines.append(_sentence(rng))
    lines += list(extra) * 20
    return lines
