"""The pure rules of exact-continuity mode (``fulmen.gateway.continuity``); the mode itself runs
against real vLLM (``tests/integration/test_real_vllm_continuity.py``) and the embedded server
(``packages/local-backend/tests/test_server_gateway_continuity.py``)."""

from __future__ import annotations

from typing import Any

from fulmen.gateway.continuity import (
    Anchor,
    chat_response,
    completion_body,
    continuation_ids,
    extends,
)

TOOLS: tuple[dict[str, Any], ...] = ({"type": "function", "function": {"name": "calc"}},)
CALL = {"id": "c1", "type": "function", "function": {"name": "calc", "arguments": '{"x": 1}'}}
ANCHOR = Anchor(
    messages=({"role": "user", "content": "q"},),
    tools=TOOLS,
    answer={"role": "assistant", "content": None, "tool_calls": [CALL]},
    prompt_ids=(1, 2, 3),
    response_ids=(7, 8, 9),  # 9: the end token
    ended=True,
    request_id="ep.0",
)
TOOL_RESULT = {"role": "tool", "tool_call_id": "c1", "content": "2"}


def test_extends_needs_the_same_history_answer_and_tools() -> None:
    # the agent's copy re-serialises the arguments and adds fields: still the same answer
    sent = {"role": "assistant", "content": "", "tool_calls": [{**CALL, "function": {"name": "calc", "arguments": '{ "x":1 }'}}]}
    assert extends(ANCHOR, [*ANCHOR.messages, sent, TOOL_RESULT], TOOLS)
    assert not extends(ANCHOR, [*ANCHOR.messages, sent], TOOLS)  # nothing new
    assert not extends(ANCHOR, [*ANCHOR.messages, sent, TOOL_RESULT], ())  # other tools
    other = {"role": "assistant", "content": None, "tool_calls": [{**CALL, "function": {"name": "calc", "arguments": '{"x": 2}'}}]}
    assert not extends(ANCHOR, [*ANCHOR.messages, other, TOOL_RESULT], TOOLS)
    assert not extends(ANCHOR, [{"role": "user", "content": "edited"}, sent, TOOL_RESULT], TOOLS)


def test_continuation_ids_cut_after_the_end_token_of_the_earlier_answer() -> None:
    before = (1, 2, 3, 70, 80, 9, 5)  # re-rendered answer (70, 80), end token 9, template's "\n" 5
    after = (*before, 11, 12, 13)  # the tool result and the generation prompt
    assert continuation_ids(ANCHOR, before, after) == (1, 2, 3, 7, 8, 9, 5, 11, 12, 13)
    assert continuation_ids(ANCHOR, before, (1, 2, 4, 11)) is None  # history rendered otherwise
    assert continuation_ids(ANCHOR, (1, 2, 3, 70, 5), (1, 2, 3, 70, 5, 11)) is None  # no end token


def test_completion_body_and_chat_response() -> None:
    chat = {"model": "m", "messages": [], "tools": list(TOOLS), "tool_choice": "auto", "temperature": 0.5,
            "max_completion_tokens": 9, "logprobs": True, "top_logprobs": 2, "stream": False}  # fmt: skip
    body = completion_body(chat, (1, 2))
    assert body == {"model": "m", "temperature": 0.5, "prompt": [1, 2], "max_tokens": 9, "logprobs": 2,
                    "return_token_ids": True, "skip_special_tokens": False}  # fmt: skip
    completion = {"model": "m", "usage": {"total_tokens": 5}, "choices": [{
        "index": 0, "text": 'ok<tool_call>{"name": "calc", "arguments": {"x": 1}}</tool_call>',
        "finish_reason": "stop", "stop_reason": None, "token_ids": [4, 5], "prompt_token_ids": [1, 2],
        "logprobs": {"tokens": ["ok", "<tool_call>"], "token_logprobs": [-0.5, -0.25], "top_logprobs": None}}]}  # fmt: skip
    response = chat_response(completion, "ep.1", "hermes", tools_offered=True)
    assert response["id"] == "chatcmpl-ep.1" and response["prompt_token_ids"] == [1, 2]
    (choice,) = response["choices"]
    assert choice["finish_reason"] == "tool_calls" and choice["token_ids"] == [4, 5]
    assert choice["message"]["content"] == "ok"
    assert [c["function"]["name"] for c in choice["message"]["tool_calls"]] == ["calc"]
    assert [e["logprob"] for e in choice["logprobs"]["content"]] == [-0.5, -0.25]
    plain = chat_response(completion, "ep.1", "hermes", tools_offered=False)
    assert plain["choices"][0]["message"]["content"].startswith("ok<tool_call>")
