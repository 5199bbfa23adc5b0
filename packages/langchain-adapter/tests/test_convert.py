"""Where the response id and tool calls are found in what ChatOpenAI hands the callbacks."""

from __future__ import annotations

from fulmen_langchain._convert import response_id_of, run_name, tool_call_ids_of, tool_output
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, Generation, LLMResult


def _result(
    message: AIMessage,
    *,
    llm_output: dict[str, object] | None = None,
    info: dict[str, object] | None = None,
) -> LLMResult:
    generation = ChatGeneration(message=message, generation_info=info)
    return LLMResult(generations=[[generation]], llm_output=llm_output)


def test_response_id_sources_in_order() -> None:
    message = AIMessage("hi", response_metadata={"id": "chatcmpl-ep.2"})
    assert response_id_of(_result(message, llm_output={"id": "chatcmpl-ep.1"})) == "chatcmpl-ep.1"
    assert response_id_of(_result(message)) == "chatcmpl-ep.2"
    streamed = AIMessage("hi")  # a stream: the id is dropped, the headers survive
    assert response_id_of(_result(streamed, info={"headers": {"x-request-id": "ep.3"}})) == "ep.3"
    assert response_id_of(_result(streamed, info={"headers": {"X-Request-Id": "ep.4"}})) == "ep.4"
    assert response_id_of(_result(streamed)) is None
    plain = LLMResult(generations=[[Generation(text="x")]])
    assert response_id_of(plain) is None


def test_tool_call_ids_and_outputs() -> None:
    message = AIMessage(
        "",
        tool_calls=[
            {"name": "lookup", "args": {"query": "q"}, "id": "call-1", "type": "tool_call"}
        ],
    )
    assert tool_call_ids_of(_result(message)) == ["call-1"]
    assert tool_output(ToolMessage("done", tool_call_id="call-1")) == "done"
    assert tool_output({"a": [1, 2]}) == {"a": [1, 2]}
    assert tool_output({"a": object()}).startswith("{'a': <object")  # pyright: ignore[reportAttributeAccessIssue]
    assert tool_output(3) == 3


def test_run_names_follow_langchain_tracers() -> None:
    assert run_name({"name": "ChatOpenAI"}, None) == "ChatOpenAI"
    assert run_name({"name": "ChatOpenAI"}, "planner") == "planner"
    assert run_name({"id": ["langchain", "chat_models", "ChatOpenAI"]}, None) == "ChatOpenAI"
    assert run_name({}, None) == "unnamed"
