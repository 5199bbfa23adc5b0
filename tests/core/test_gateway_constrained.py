"""Which requests constrain sampling, and from which response token (``fulmen.gateway.constrained``).
The same rules run against a real vLLM in ``tests/integration/test_real_vllm_continuity.py``."""

from __future__ import annotations

from typing import Any

import pytest
from fulmen.gateway.constrained import Constraint, constrained_from, constraint_of

TOOL: dict[str, Any] = {"type": "function", "function": {"name": "calc", "parameters": {}}}
STRICT: dict[str, Any] = {"type": "function", "function": {"name": "calc", "parameters": {}, "strict": True}}


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        ({"tools": [TOOL]}, "none"),
        ({"tools": [TOOL], "tool_choice": "auto"}, "none"),
        ({"tools": [TOOL], "tool_choice": "none"}, "none"),
        ({"tools": [STRICT], "tool_choice": "none"}, "none"),
        ({"tools": [TOOL], "tool_choice": "required"}, "call"),
        ({"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "calc"}}}, "call"),
        ({"tools": [TOOL, STRICT]}, "tool_call"),
        ({"tools": [STRICT], "tool_choice": "auto"}, "tool_call"),
        ({"response_format": {"type": "json_object"}}, "call"),
        ({"response_format": {"type": "json_schema", "json_schema": {}}}, "call"),
        ({"response_format": {"type": "text"}}, "none"),
        ({"structured_outputs": {"choice": ["a", "b"]}}, "call"),
        ({"guided_regex": "a+"}, "call"),
        ({}, "none"),
    ],
)
def test_constraint_of_a_request(body: dict[str, Any], kind: str) -> None:
    assert constraint_of(body).kind == kind


def test_a_server_that_constrains_every_tool_call() -> None:
    assert constraint_of({"tools": [TOOL]}, strict_tools=True).kind == "tool_call"
    assert constraint_of({"tools": [TOOL], "tool_choice": "none"}, strict_tools=True).kind == "none"
    assert constraint_of({}, strict_tools=True).kind == "none"


def test_constrained_from_the_token_that_opens_the_tool_call() -> None:
    after = Constraint("tool_call")
    tokens = ["I", " will", "<tool_call>", "\n", "{"]
    assert constrained_from(after, tokens, True, 5) == 2
    assert constrained_from(after, tokens, False, 5) == 2  # opened but never closed: still constrained
    assert constrained_from(after, ["I", " <tool", "_call>", "{"], True, 4) == 1  # a marker over two tokens
    assert constrained_from(after, ["Hi", "!"], False, 2) is None
    assert constrained_from(after, ["token_id:5", "token_id:9"], True, 2) == 0  # no texts: the whole call
    assert constrained_from(after, None, True, 2) == 0
    assert constrained_from(Constraint("call"), ["a"], False, 1) == 0
    assert constrained_from(Constraint("call"), [], False, 0) is None
    assert constrained_from(Constraint("none"), tokens, True, 5) is None
