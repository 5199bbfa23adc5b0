"""The run tree's structure rules and tool joins, on hand-fed run events (the shapes LangGraph
sends; the end-to-end forms are in test_handler.py)."""

from __future__ import annotations

from uuid import UUID, uuid4

from fulmen_langchain._runs import RunTree


def _ns(*nodes: str) -> dict[str, object]:
    return {"langgraph_checkpoint_ns": "|".join(f"{n}:{uuid4()}" for n in nodes)}


def test_agent_is_the_innermost_graph_and_node_the_langgraph_node() -> None:
    tree = RunTree()
    root, sub, node, llm = uuid4(), uuid4(), uuid4(), uuid4()
    tree.start(root, None, "team", {})
    tree.start(sub, root, "researcher", _ns("researcher"))
    tree.start(node, sub, "agent", {**_ns("researcher", "agent"), "langgraph_node": "agent"})
    meta = {**_ns("researcher", "agent"), "langgraph_node": "agent", "langgraph_step": 3}
    tree.start(llm, node, "ChatOpenAI", meta)
    call = tree.end_llm(llm, "chatcmpl-ep.0", [])
    assert call is not None
    assert (call.agent, call.node, call.path) == (
        "researcher",
        "agent",
        ("team", "researcher", "agent"),
    )
    assert call.metadata == {"run_id": str(llm), "langgraph_step": 3}


def test_fulmen_agent_metadata_wins() -> None:
    tree = RunTree()
    root, llm = uuid4(), uuid4()
    tree.start(root, None, "team", {})
    tree.start(llm, root, "ChatOpenAI", {**_ns("writer"), "fulmen_agent": "scribe"})
    call = tree.end_llm(llm, "chatcmpl-ep.0", [])
    assert call is not None and call.agent == "scribe"


def _tool_target(
    tree: RunTree, tool: UUID, parent: UUID | None, tool_call_id: str | None
) -> str | None:
    tree.start(tool, parent, "lookup", {}, tool=True, tool_call_id=tool_call_id)
    result = tree.end_tool(tool, output="x")
    return None if result is None else result.response_id


def test_tool_results_join_by_id_else_latest_call_never_guessed() -> None:
    tree = RunTree()
    root, first, second = uuid4(), uuid4(), uuid4()
    tree.start(root, None, "graph", {})
    tree.start(first, root, "ChatOpenAI", {})
    tree.end_llm(first, "chatcmpl-ep.0", ["call-a"])
    tree.start(second, root, "ChatOpenAI", {})
    tree.end_llm(second, "chatcmpl-ep.1", ["call-b"])
    assert _tool_target(tree, uuid4(), root, "call-a") == "chatcmpl-ep.0"
    assert _tool_target(tree, uuid4(), None, "call-b") == "chatcmpl-ep.1"  # another root
    assert _tool_target(tree, uuid4(), root, None) == "chatcmpl-ep.1"  # latest under root
    assert _tool_target(tree, uuid4(), root, "call-unknown") is None
    # a call the framework gave no id: later tools are not joined to the earlier call
    third = uuid4()
    tree.start(third, root, "ChatOpenAI", {})
    assert tree.end_llm(third, None, []) is None
    assert _tool_target(tree, uuid4(), root, None) is None
    tree.end(root)
    assert len(tree) == 0


def test_tool_error_result_and_unknown_runs() -> None:
    tree = RunTree()
    llm, tool = uuid4(), uuid4()
    tree.start(llm, None, "ChatOpenAI", {})
    tree.end_llm(llm, "chatcmpl-ep.0", ["call-a"])
    tree.start(tool, None, "lookup", {}, tool=True, tool_call_id="call-a")
    note = tree.end_tool(tool, error="KitToolError: boom")
    assert note is not None
    assert note.tool_results == (
        {"tool_call_id": "call-a", "name": "lookup", "error": "KitToolError: boom"},
    )
    assert tree.end_tool(tool, output="again") is None  # already ended
    assert tree.end_llm(uuid4(), "chatcmpl-ep.9", []) is None  # never started
