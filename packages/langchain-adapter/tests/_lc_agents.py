"""Sample LangChain/LangGraph agents for the adapter's tests, pointed at an episode's gateway
URL (the kit's sample task: one ``lookup`` tool whose body is ``fulmen_testkit.lookup``)."""

from __future__ import annotations

from typing import Any, Literal

from fulmen import EpisodeContext, Task
from fulmen.runner import AgentFn
from fulmen_langchain import LangChainAdapter
from fulmen_testkit import MODEL, TOOL_DESCRIPTION, TOOL_NAME, lookup
from langchain_core.messages import AnyMessage
from langchain_core.tools import BaseTool, StructuredTool
from langchain_openai import ChatOpenAI
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.prebuilt import ToolNode

GRAPH_NAME = "kit-agent"
"""Name of the sample graph: the agent name its calls carry."""


def chat_model(ctx: EpisodeContext, *, stream: bool = False) -> ChatOpenAI:
    """The episode's ``ChatOpenAI`` (:meth:`LangChainAdapter.model_for`), streaming or not."""
    return LangChainAdapter.model_for(ctx, MODEL, streaming=stream)


def lookup_tool(task: Task) -> BaseTool:
    """The kit's ``lookup`` tool for ``task``."""

    def run(query: str) -> str:
        return lookup(task, query)

    return StructuredTool.from_function(func=run, name=TOOL_NAME, description=TOOL_DESCRIPTION)


def react_graph(
    model: ChatOpenAI, tools: list[BaseTool], *, name: str = GRAPH_NAME, use_async: bool = False
) -> Any:
    """A hand-built ReAct graph: node ``agent`` calls the model (``ainvoke`` when
    ``use_async``), node ``tools`` runs a ToolNode, until the model stops asking for tools."""
    bound = model.bind_tools(tools)

    def agent(state: MessagesState) -> dict[str, list[AnyMessage]]:
        return {"messages": [bound.invoke(state["messages"])]}

    async def aagent(state: MessagesState) -> dict[str, list[AnyMessage]]:
        return {"messages": [await bound.ainvoke(state["messages"])]}

    def route(state: MessagesState) -> Literal["tools", "__end__"]:
        last = state["messages"][-1]
        return "tools" if getattr(last, "tool_calls", None) else "__end__"

    builder = StateGraph(MessagesState)
    builder.add_node("agent", aagent if use_async else agent)
    builder.add_node("tools", ToolNode(tools))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", route)
    builder.add_edge("tools", "agent")
    graph: CompiledStateGraph[Any, Any, Any, Any] = builder.compile(name=name)
    return graph


def answer_of(state: Any) -> str:
    """The final message's text."""
    return str(state["messages"][-1].content)


def kit_agent(*, stream: bool = False, use_async: bool = False) -> AgentFn:
    """The kit's sample agent as a LangGraph graph (sync, async, streaming forms)."""

    def build(task: Task, ctx: EpisodeContext) -> tuple[Any, dict[str, Any]]:
        model = chat_model(ctx, stream=stream)
        graph = react_graph(model, [lookup_tool(task)], use_async=use_async)
        return graph, {"messages": [("user", task.data["question"])]}

    def solve(task: Task, ctx: EpisodeContext) -> str:
        graph, inputs = build(task, ctx)
        if stream:
            states = list(graph.stream(inputs, stream_mode="values"))
            return answer_of(states[-1])
        return answer_of(graph.invoke(inputs))

    async def asolve(task: Task, ctx: EpisodeContext) -> str:
        graph, inputs = build(task, ctx)
        if stream:
            states = [state async for state in graph.astream(inputs, stream_mode="values")]
            return answer_of(states[-1])
        return answer_of(await graph.ainvoke(inputs))

    return asolve if use_async else solve
