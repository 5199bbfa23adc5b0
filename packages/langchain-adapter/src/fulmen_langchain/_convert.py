"""Reading what LangChain's callbacks carry: run names, response ids, tool calls, tool output.

Where ChatOpenAI puts the response id (langchain-openai 1.7, chat completions API):

* not streaming: ``LLMResult.llm_output["id"]`` and the message's ``response_metadata["id"]``;
* streaming: nowhere; the chunks' ``id`` is dropped. With ``include_response_headers=True`` the
  first chunk's ``generation_info["headers"]`` holds the gateway's ``X-Request-Id`` header
  (``{episode}.{seq}``), which joins as well as the response id.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGeneration, LLMResult

__all__ = ["response_id_of", "run_name", "tool_call_ids_of", "tool_output"]

_REQUEST_ID_HEADER = "x-request-id"


def run_name(serialized: Mapping[str, Any] | None, name: object) -> str:
    """The name LangChain's own tracers give a run: the ``name`` keyword (``run_name`` in the
    config, the graph or node name), else the serialized object's name or class id."""
    if isinstance(name, str) and name:
        return name
    if serialized:
        named = serialized.get("name")
        if isinstance(named, str) and named:
            return named
        ident = serialized.get("id")
        if isinstance(ident, list) and ident and isinstance(ident[-1], str):
            return ident[-1]
    return "unnamed"


def response_id_of(result: LLMResult) -> str | None:
    """The response (or request) id of an LLM call, or None when the framework dropped it."""
    output = result.llm_output or {}
    found = output.get("id")
    if isinstance(found, str) and found:
        return found
    for generations in result.generations:
        for generation in generations:
            if isinstance(generation, ChatGeneration):
                found = generation.message.response_metadata.get("id")
                if isinstance(found, str) and found:
                    return found
            headers = (generation.generation_info or {}).get("headers")
            if isinstance(headers, Mapping):
                for key, value in headers.items():
                    if str(key).lower() == _REQUEST_ID_HEADER and isinstance(value, str):
                        return value
    return None


def tool_call_ids_of(result: LLMResult) -> list[str]:
    """Ids of the tool calls the model asked for in ``result`` (every generation)."""
    ids: list[str] = []
    for generations in result.generations:
        for generation in generations:
            if isinstance(generation, ChatGeneration):
                tool_calls = getattr(generation.message, "tool_calls", None) or ()
                for call in tool_calls:
                    ident = call.get("id")
                    if isinstance(ident, str) and ident:
                        ids.append(ident)
    return ids


def tool_output(output: object) -> object:
    """A JSON-safe form of what a tool returned (a ToolMessage's content, a plain value, or
    its ``str``)."""
    if isinstance(output, BaseMessage):
        output = output.content
    if output is None or isinstance(output, str | int | float | bool):
        return output
    if isinstance(output, Mapping | Sequence):
        try:
            json.dumps(output)
        except (TypeError, ValueError):
            return str(output)
        return output
    return str(output)
