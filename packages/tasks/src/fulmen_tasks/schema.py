"""OpenAI tool schemas for the tasks' tools (one helper, so every task states its tool alike)."""

from __future__ import annotations

from typing import Any

__all__ = ["string_tool"]


def string_tool(name: str, description: str, argument: str) -> dict[str, Any]:
    """The OpenAI ``tools`` entry of a function ``name`` that takes one required string
    ``argument``; the schema is a plain dict, as the OpenAI client and chat templates take it."""
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": {argument: {"type": "string"}},
                "required": [argument],
            },
        },
    }
