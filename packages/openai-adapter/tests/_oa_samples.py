"""The kit's sample agent written with the OpenAI Agents SDK and with a plain openai client."""

from __future__ import annotations

import json
from typing import Any

from agents import (
    Agent,
    InputGuardrail,
    OutputGuardrail,
    Runner,
    function_tool,
    handoff,
)
from agents.extensions import handoff_filters
from fulmen import EpisodeContext, Task
from fulmen.runner import AgentFn
from fulmen_openai import AgentsSDKAdapter, OpenAIClientAdapter, agent_scope
from fulmen_testkit import MODEL, TOOL_DESCRIPTION, TOOL_NAME, lookup
from openai import AsyncOpenAI, OpenAI

MAX_TURNS = 4

LOOKUP_TOOL: Any = {
    "type": "function",
    "function": {
        "name": TOOL_NAME,
        "description": TOOL_DESCRIPTION,
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string"}},
            "required": ["query"],
        },
    },
}


# ----------------------------------------------------------------------- Agents SDK


def sdk_agents(
    task: Task,
    *,
    input_guardrails: list[InputGuardrail[Any]] | None = None,
    output_guardrails: list[OutputGuardrail[Any]] | None = None,
) -> Agent[Any]:
    """Two agents: ``triage`` hands off to ``researcher``, which has the ``lookup`` tool.

    The handoff drops the tool items from the history (``remove_all_tools``), so the
    researcher's first turn is a user turn and calls its tool. ``input_guardrails`` go on
    ``triage``, ``output_guardrails`` on ``researcher``.
    """

    @function_tool(name_override=TOOL_NAME, description_override=TOOL_DESCRIPTION)
    def lookup_tool(query: str) -> str:
        return lookup(task, query)

    researcher = Agent(
        name="researcher",
        instructions="Look it up.",
        tools=[lookup_tool],
        output_guardrails=output_guardrails or [],
    )
    return Agent(
        name="triage",
        instructions="Hand the question to the researcher.",
        handoffs=[handoff(researcher, input_filter=handoff_filters.remove_all_tools)],
        input_guardrails=input_guardrails or [],
    )


def make_sdk_agent(*, stream: bool = False, use_async: bool = False) -> AgentFn:
    """The SDK sample agent as a runner agent, sync or async, streamed or not."""

    async def run(task: Task, ctx: EpisodeContext) -> str:
        question = str(task.data["question"])
        config = AgentsSDKAdapter.model_for(ctx, MODEL)
        if stream:
            streamed = Runner.run_streamed(
                sdk_agents(task), question, run_config=config, max_turns=MAX_TURNS
            )
            async for _ in streamed.stream_events():
                pass
            return str(streamed.final_output)
        result = await Runner.run(
            sdk_agents(task), question, run_config=config, max_turns=MAX_TURNS
        )
        return str(result.final_output)

    if use_async:
        return run

    def run_sync(task: Task, ctx: EpisodeContext) -> str:
        config = AgentsSDKAdapter.model_for(ctx, MODEL)
        if stream:
            import asyncio

            return asyncio.run(run(task, ctx))
        result = Runner.run_sync(
            sdk_agents(task), str(task.data["question"]), run_config=config, max_turns=MAX_TURNS
        )
        return str(result.final_output)

    return run_sync


# ----------------------------------------------------------------------- plain client


def _messages(task: Task) -> list[Any]:
    return [
        {"role": "system", "content": "Answer with the lookup tool."},
        {"role": "user", "content": str(task.data["question"])},
    ]


def _tool_messages(task: Task, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for call in calls:
        query = json.loads(call["function"]["arguments"] or "{}").get("query", "")
        out.append({"role": "tool", "tool_call_id": call["id"], "content": lookup(task, query)})
    return out


def _from_stream(chunks: Any) -> dict[str, Any]:
    """The assistant message a chat completions stream adds up to."""
    content: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            delta = choice.delta
            content.append(delta.content or "")
            for item in delta.tool_calls or []:
                call = calls.setdefault(
                    item.index,
                    {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
                )
                call["id"] = item.id or call["id"]
                if item.function is not None:
                    call["function"]["name"] += item.function.name or ""
                    call["function"]["arguments"] += item.function.arguments or ""
    message: dict[str, Any] = {"role": "assistant", "content": "".join(content) or None}
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    return message


def solve_with_client(task: Task, client: OpenAI, *, stream: bool = False) -> str | None:
    """A hand-written tool loop (like examples/calculator/agent.py) on a sync client."""
    messages = _messages(task)
    with agent_scope("assistant", node="tool_loop"):
        for _ in range(MAX_TURNS):
            if stream:
                chunks = client.chat.completions.create(
                    model=MODEL,
                    messages=messages,
                    tools=[LOOKUP_TOOL],
                    stream=True,
                )
                message = _from_stream(chunks)
            else:
                response = client.chat.completions.create(
                    model=MODEL,
                    messages=messages,
                    tools=[LOOKUP_TOOL],
                )
                message = response.choices[0].message.model_dump(exclude_none=True)
            if not message.get("tool_calls"):
                return message.get("content")
            messages.append(message)
            messages.extend(_tool_messages(task, message["tool_calls"]))
    return None


async def asolve_with_client(task: Task, client: AsyncOpenAI) -> str | None:
    """The async form of :func:`solve_with_client` (not streamed)."""
    messages = _messages(task)
    with agent_scope("assistant", node="tool_loop"):
        for _ in range(MAX_TURNS):
            response = await client.chat.completions.create(
                model=MODEL,
                messages=messages,
                tools=[LOOKUP_TOOL],
            )
            message = response.choices[0].message.model_dump(exclude_none=True)
            if not message.get("tool_calls"):
                return message.get("content")
            messages.append(message)
            messages.extend(_tool_messages(task, message["tool_calls"]))
    return None


def make_client_agent(*, stream: bool = False, use_async: bool = False) -> AgentFn:
    """The plain-client sample agent: its own client per episode
    (:meth:`OpenAIClientAdapter.model_for`)."""
    if use_async:

        async def run_async(task: Task, ctx: EpisodeContext) -> str | None:
            return await asolve_with_client(
                task, OpenAIClientAdapter.model_for(ctx, use_async=True)
            )

        return run_async

    def run(task: Task, ctx: EpisodeContext) -> str | None:
        return solve_with_client(task, OpenAIClientAdapter.model_for(ctx), stream=stream)

    return run
