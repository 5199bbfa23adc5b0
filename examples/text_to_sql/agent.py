"""A text-to-SQL agent written as a LangGraph graph, trained by fulmen through the LangChain
adapter.

The model gets the compact schema (system message) and a question, calls ``execute_sql`` with a
query, sees its rows or its error, may rewrite and run again, then answers with its final SQL
(at most :data:`MAX_TURNS` model calls). The final answer's SQL is what is scored: execution
accuracy against the gold query (:mod:`examples.text_to_sql.sql`). Bad SQL is an observation
for the model (an ``error: ...`` tool result), never a crash.

The fulmen-specific lines are ``ADAPTER.attach()`` and ``ADAPTER.model_for(ctx)`` (the
``ChatOpenAI`` pointed at the episode); fulmen scores the answer with :func:`reward`.
"""

from __future__ import annotations

import json
import os
from typing import Any, Literal

import openai
from fulmen import EpisodeContext, Task
from fulmen_langchain import LangChainAdapter
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, SystemMessage
from langchain_core.tools import BaseTool, StructuredTool
from langchain_openai import ChatOpenAI
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode

from examples.text_to_sql.make_db import SCHEMA, ensure_db
from examples.text_to_sql.questions import make_splits
from examples.text_to_sql.sql import (
    execution_match,
    extract_sql,
    format_result,
    has_order_by,
    run_query,
)

MAX_TURNS = 3
"""Model calls per episode, at most (query, optional rewrite, final answer)."""
MAX_TOKENS = 160
"""Tokens per model call, at most (a tool call with the longest gold query is ~150)."""
CONTEXT = int(os.environ.get("FULMEN_SQL_CONTEXT", "512"))
"""The served model's context (prompt plus generation), in tokens: 512 for the tiny reference
model; set ``FULMEN_SQL_CONTEXT`` for a larger model (``train_verl.toml``)."""
GRAPH_NAME = "sql-agent"
"""The graph's name: the agent name fulmen records for its calls."""
MODEL_NAME = "policy"
"""The model name the trainer serves (``[model] name``)."""
SYSTEM_PROMPT = SCHEMA
"""The system message: the compact schema (the reference model reads characters)."""

EXECUTE_SQL_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "execute_sql",
        "description": "Run one read-only SQLite query on the company database; returns its "
        "rows (a,b;c,d) or an error.",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string"}},
            "required": ["query"],
        },
    },
}
"""OpenAI tool schema of ``execute_sql`` (what the model is offered)."""

ADAPTER = LangChainAdapter()
"""Attached on the first episode (``attach()`` is idempotent): the one line fulmen needs."""


def execute_sql(query: Any = "") -> str:
    """Run ``query`` read-only on the company database; compact rows or an ``error:`` line."""
    return format_result(run_query(ensure_db(), str(query)))


EXECUTE_SQL: BaseTool = StructuredTool.from_function(
    func=execute_sql,
    name=EXECUTE_SQL_TOOL["function"]["name"],
    description=EXECUTE_SQL_TOOL["function"]["description"],
)
"""Runs queries for the ``tools`` node."""


def _prompt_tokens(messages: list[AnyMessage]) -> int:
    """The rendered prompt's length for the reference model's character-level ChatML template
    (one token per character; an overestimate for subword tokenizers)."""
    total = 26 + 11 + 4  # tools line, generation prompt, margin
    for message in messages:
        total += len(message.text) + 13  # <|im_start|>role\n ... <|im_end|>\n
        for call in getattr(message, "tool_calls", None) or ():
            total += len(json.dumps(call["args"])) + 40  # <tool_call>{"name": ...}</tool_call>
    return total


def build_graph(model: ChatOpenAI) -> Any:
    """``agent`` (the model, offered ``execute_sql``) ⇄ ``tools`` (runs the query), at most
    :data:`MAX_TURNS` model calls; a call that would overrun the context ends the episode."""
    bound = model.bind_tools([EXECUTE_SQL_TOOL])

    def agent(state: MessagesState) -> dict[str, list[AnyMessage]]:
        messages = state["messages"]
        budget = min(MAX_TOKENS, CONTEXT - _prompt_tokens(messages))
        if budget < 16:
            return {"messages": [AIMessage("")]}
        try:
            return {"messages": [bound.invoke(messages, max_completion_tokens=budget)]}
        except openai.BadRequestError:  # the prompt outgrew the context after all
            return {"messages": [AIMessage("")]}

    def route(state: MessagesState) -> Literal["tools", "__end__"]:
        messages = state["messages"]
        turns = sum(isinstance(m, AIMessage) for m in messages)
        wants_tool = bool(getattr(messages[-1], "tool_calls", None))
        return "tools" if wants_tool and turns < MAX_TURNS else "__end__"

    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    builder.add_node("tools", ToolNode([EXECUTE_SQL]))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", route)
    builder.add_edge("tools", "agent")
    return builder.compile(name=GRAPH_NAME)


def solve(task: Task, ctx: EpisodeContext) -> str | None:
    """Run the graph on one question; returns the final answer text (None if it gave none)."""
    ADAPTER.attach()
    ensure_db()
    model = ADAPTER.model_for(ctx, MODEL_NAME, max_completion_tokens=MAX_TOKENS)
    inputs: Any = {"messages": [SystemMessage(SYSTEM_PROMPT), HumanMessage(task.data["question"])]}
    last = build_graph(model).invoke(inputs)["messages"][-1]
    if isinstance(last, AIMessage) and not last.tool_calls:
        return last.text
    return None


def score(gold_sql: str, answer: str | None) -> float:
    """Execution accuracy of a final answer: 1.0 when its SQL returns the gold rows (in order
    when the gold query has ``ORDER BY``), else 0.0 (no SQL, bad SQL, other rows)."""
    predicted = extract_sql(answer)
    if predicted is None:
        return 0.0
    db = ensure_db()
    gold = run_query(db, gold_sql)
    ok = execution_match(gold, run_query(db, predicted), ordered=has_order_by(gold_sql))
    return 1.0 if ok else 0.0


def reward(task: Task, output: str | None, ctx: EpisodeContext) -> float:
    """Execution accuracy of the final answer's SQL (see :func:`score`)."""
    return score(task.data["gold"], output)


def train_tasks() -> list[dict[str, Any]]:
    """The training split (seeded)."""
    return [dict(q) for q in make_splits(seed=0)[0]]


def eval_tasks() -> list[dict[str, Any]]:
    """The held-out split (seeded; no template instance shared with training)."""
    return [dict(q) for q in make_splits(seed=0)[1]]
