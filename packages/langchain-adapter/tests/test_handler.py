"""The handler's structure on real LangChain/LangGraph runs through the real gateway: LCEL
chains, multi-node graphs, subgraphs, explicit-handler mode, tool results and errors."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _lc_agents import answer_of, chat_model, lookup_tool, react_graph
from fulmen import EpisodeContext, Task
from fulmen.protocol import EpisodeStatus, Transition
from fulmen.runner import AgentFn, EpisodeResult
from fulmen_langchain import AGENT_METADATA_KEY, LangChainAdapter
from fulmen_testkit import TOOL_NAME, KitStack, kit_task
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langgraph.graph import END, START, MessagesState, StateGraph


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[KitStack]:
    with KitStack(tmp_path) as running:
        yield running


@pytest.fixture
def adapter() -> Iterator[LangChainAdapter]:
    with LangChainAdapter() as attached:
        yield attached


def _run(
    stack: KitStack, agent: AgentFn, mode: Any = "ok"
) -> tuple[EpisodeResult, list[Transition]]:
    result = stack.run(agent, [kit_task(0, mode)])[0]
    return result, stack.store.transitions(result.episode.id)


def _shape(t: Transition) -> tuple[object, ...]:
    return (t.agent, t.metadata.get("node"), tuple(t.metadata.get("path", ())))


def test_lcel_chain_names_come_from_the_runnables(
    stack: KitStack, adapter: LangChainAdapter
) -> None:
    def agent(task: Task, ctx: EpisodeContext) -> str:
        prompt = ChatPromptTemplate.from_messages([("user", "{question}")])
        chain = prompt | chat_model(ctx) | StrOutputParser()
        first = chain.invoke({"question": task.data["question"]})
        named = chain.with_config(run_name="qa")
        second = named.invoke(
            {"question": "again"}, config={"metadata": {AGENT_METADATA_KEY: "qa-bot"}}
        )
        return first + second

    result, transitions = _run(stack, agent)
    assert result.episode.status is EpisodeStatus.SUCCEEDED, result.episode.error
    assert [_shape(t) for t in transitions] == [
        ("RunnableSequence", "RunnableSequence", ("RunnableSequence",)),
        ("qa-bot", "qa", ("qa",)),
    ]
    assert all(t.metadata["framework"] == "langchain" and t.metadata["run_id"] for t in transitions)


def test_multi_node_graph_carries_node_names_and_paths(
    stack: KitStack, adapter: LangChainAdapter
) -> None:
    def agent(task: Task, ctx: EpisodeContext) -> str:
        model = chat_model(ctx)

        def planner(state: MessagesState) -> dict[str, Any]:
            return {"messages": [model.invoke(state["messages"])]}

        def writer(state: MessagesState) -> dict[str, Any]:
            return {"messages": [model.invoke([*state["messages"], ("user", "write it")])]}

        builder = StateGraph(MessagesState)
        builder.add_node("planner", planner)
        builder.add_node("writer", writer, metadata={AGENT_METADATA_KEY: "scribe"})
        builder.add_edge(START, "planner")
        builder.add_edge("planner", "writer")
        builder.add_edge("writer", END)
        graph = builder.compile(name="team")
        inputs: Any = {"messages": [("user", task.data["question"])]}
        return answer_of(graph.invoke(inputs))

    result, transitions = _run(stack, agent)
    assert result.episode.status is EpisodeStatus.SUCCEEDED, result.episode.error
    assert [_shape(t) for t in transitions] == [
        ("team", "planner", ("team", "planner")),
        ("scribe", "writer", ("team", "writer")),
    ]
    assert [t.metadata["langgraph_step"] for t in transitions] == [1, 2]
    assert len(adapter.runs) == 0, "every run is forgotten when it ends"


def test_subgraph_calls_carry_the_subgraph_as_agent(
    stack: KitStack, adapter: LangChainAdapter
) -> None:
    def agent(task: Task, ctx: EpisodeContext) -> str:
        model = chat_model(ctx)
        researcher = react_graph(model, [lookup_tool(task)], name="researcher")

        def writer(state: MessagesState) -> dict[str, Any]:
            return {"messages": [model.invoke([*state["messages"], ("user", "write it")])]}

        builder = StateGraph(MessagesState)
        builder.add_node("researcher", researcher)
        builder.add_node("writer", writer)
        builder.add_edge(START, "researcher")
        builder.add_edge("researcher", "writer")
        builder.add_edge("writer", END)
        graph = builder.compile(name="team")
        inputs: Any = {"messages": [("user", task.data["question"])]}
        return answer_of(graph.invoke(inputs))

    result, transitions = _run(stack, agent)
    assert result.episode.status is EpisodeStatus.SUCCEEDED, result.episode.error
    assert [(t.agent, t.metadata.get("node")) for t in transitions] == [
        ("researcher", "agent"),
        ("researcher", "agent"),
        ("team", "writer"),
    ]
    assert transitions[0].metadata["path"] == ["team", "researcher", "researcher", "agent"]
    (result_item,) = transitions[0].metadata["tool_results"]
    assert result_item["name"] == TOOL_NAME
    assert result_item["output"] == "code-of-kit-0"
    assert result_item["tool_call_id"]
    assert "tool_results" not in transitions[1].metadata
    assert len(adapter.runs) == 0, "every run is forgotten when it ends"


def test_tool_error_is_recorded_on_the_call_and_reaches_the_user(
    stack: KitStack, adapter: LangChainAdapter
) -> None:
    def agent(task: Task, ctx: EpisodeContext) -> str:
        graph = react_graph(chat_model(ctx), [lookup_tool(task)])
        inputs: Any = {"messages": [("user", task.data["question"])]}
        return answer_of(graph.invoke(inputs))

    result, transitions = _run(stack, agent, "tool_error")
    assert result.episode.status is EpisodeStatus.FAILED
    assert "KitToolError: lookup failed for kit-0" in (result.episode.error or "")
    (item,) = transitions[0].metadata["tool_results"]
    assert item["name"] == TOOL_NAME
    assert item["error"] == "KitToolError: lookup failed for kit-0"
    assert "output" not in item


def test_tool_run_outside_a_graph_joins_by_tool_call_id(
    stack: KitStack, adapter: LangChainAdapter
) -> None:
    """A hand-written loop: the tool runs as its own root run, joined by its tool call id."""

    def agent(task: Task, ctx: EpisodeContext) -> str:
        tool = lookup_tool(task)
        model = chat_model(ctx).bind_tools([tool])
        message = model.invoke(task.data["question"])
        call = message.tool_calls[0]
        output = tool.invoke(call)
        return str(output.content)

    result, transitions = _run(stack, agent)
    assert result.output == "code-of-kit-0"
    (item,) = transitions[0].metadata["tool_results"]
    assert (item["name"], item["output"]) == (TOOL_NAME, "code-of-kit-0")


def test_explicit_handler_without_attach(stack: KitStack) -> None:
    adapter = LangChainAdapter()
    assert not adapter.attached

    def agent(task: Task, ctx: EpisodeContext) -> str:
        graph = react_graph(chat_model(ctx), [lookup_tool(task)])
        inputs = {"messages": [("user", task.data["question"])]}
        graph.invoke(inputs)  # not observed: no handler, not attached
        return answer_of(graph.invoke(inputs, config={"callbacks": [adapter.handler]}))

    result, transitions = _run(stack, agent)
    assert result.episode.status is EpisodeStatus.SUCCEEDED, result.episode.error
    assert ["framework" in t.metadata for t in transitions] == [False, False, True, True]
    assert transitions[2].metadata["tool_results"][0]["output"] == "code-of-kit-0"


def test_explicit_handler_while_attached_is_not_doubled(stack: KitStack) -> None:
    def agent(task: Task, ctx: EpisodeContext) -> str:
        graph = react_graph(chat_model(ctx), [lookup_tool(task)])
        inputs = {"messages": [("user", task.data["question"])]}
        return answer_of(graph.invoke(inputs, config={"callbacks": [adapter.handler]}))

    with LangChainAdapter() as adapter:
        result, _ = _run(stack, agent)
    # one annotation per call, one per tool result
    assert len(stack.store.annotations(result.episode.id)) == 3


def test_zero_touch_reaches_runs_in_plain_threads(
    stack: KitStack, adapter: LangChainAdapter
) -> None:
    """A thread started with threading.Thread inherits no context variables; the hook is
    process-wide, so its runs are still observed."""

    def agent(task: Task, ctx: EpisodeContext) -> str:
        out: list[str] = []
        graph = react_graph(chat_model(ctx), [lookup_tool(task)])
        inputs = {"messages": [("user", task.data["question"])]}
        worker = threading.Thread(target=lambda: out.append(answer_of(graph.invoke(inputs))))
        worker.start()
        worker.join()
        return out[0]

    result, transitions = _run(stack, agent)
    assert result.episode.status is EpisodeStatus.SUCCEEDED, result.episode.error
    assert [t.metadata.get("node") for t in transitions] == ["agent", "agent"]
    assert transitions[0].metadata["tool_results"][0]["output"] == "code-of-kit-0"


def test_stream_without_response_headers_warns_once(
    stack: KitStack, adapter: LangChainAdapter, caplog: pytest.LogCaptureFixture
) -> None:
    """langchain-openai drops a stream's response id: such calls cannot be joined, and the
    adapter says how to fix it (once), without breaking the run."""

    def agent(task: Task, ctx: EpisodeContext) -> str:
        model = chat_model(ctx, stream=True)
        model.include_response_headers = False
        graph = react_graph(model, [lookup_tool(task)])
        inputs: Any = {"messages": [("user", task.data["question"])]}
        return answer_of(graph.invoke(inputs))

    with caplog.at_level(logging.WARNING, logger="fulmen.adapters.langchain"):
        result, transitions = _run(stack, agent)
    assert result.episode.status is EpisodeStatus.SUCCEEDED, result.episode.error
    assert all("framework" not in t.metadata for t in transitions)
    warnings = [r for r in caplog.records if "include_response_headers=True" in r.getMessage()]
    assert len(warnings) == 1
    assert adapter.failures == 0
    assert len(adapter.runs) == 0
