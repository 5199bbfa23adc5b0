"""Sample AutoGen agents and teams for the adapter's tests, as fulmen runner agents."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.base import TaskResult
from autogen_agentchat.messages import TextMessage
from autogen_agentchat.teams import RoundRobinGroupChat, SelectorGroupChat
from autogen_core.models import ChatCompletionClient
from autogen_core.tools import FunctionTool
from autogen_ext.models.openai import OpenAIChatCompletionClient
from fulmen import EpisodeContext, Task
from fulmen.runner import AgentFn
from fulmen_autogen import DEFAULT_MODEL_INFO, AutoGenAdapter
from fulmen_testkit import MODEL, TOOL_DESCRIPTION, TOOL_NAME, lookup
from fulmen_testkit.vllm_double.generation import RequestParams, default_responder

TeamKind = Literal["round_robin", "selector"]


def lookup_tool(task: Task) -> FunctionTool:
    """The kit's ``lookup`` tool for ``task``.

    ``async`` on purpose: AutoGen runs a sync tool function with ``run_in_executor``, which
    drops context variables, so ``fulmen.reward()`` inside it cannot find its episode while
    several run in the process (use ``ctx.reward`` there instead). An async tool runs in the
    agent's task and keeps them.
    """

    async def run(query: str) -> str:
        return lookup(task, query)

    return FunctionTool(run, name=TOOL_NAME, description=TOOL_DESCRIPTION)


def final_text(result: TaskResult) -> str | None:
    """The last text message of a run (None when it ended otherwise)."""
    last = result.messages[-1] if result.messages else None
    return last.content if isinstance(last, TextMessage) else None


def assistant(
    name: str, client: ChatCompletionClient, task: Task, *, tools: bool, stream: bool = False
) -> AssistantAgent:
    """An assistant that calls ``lookup`` and answers after its result (two LLM calls)."""
    return AssistantAgent(
        name,
        model_client=client,
        tools=[lookup_tool(task)] if tools else None,
        model_client_stream=stream,
        max_tool_iterations=2,
    )


def kit_agent(*, stream: bool = False, use_async: bool = False) -> AgentFn:
    """The conformance kit's sample agent: one ``AssistantAgent`` run with ``agent.run``."""

    async def solve(task: Task, ctx: EpisodeContext) -> str | None:
        agent = assistant(
            "assistant", AutoGenAdapter.model_for(ctx, MODEL), task, tools=True, stream=stream
        )
        return final_text(await agent.run(task=str(task.data["question"])))

    if use_async:
        return solve

    def solve_sync(task: Task, ctx: EpisodeContext) -> str | None:
        return asyncio.run(solve(task, ctx))

    return solve_sync


def plain_client_agent(*, stream: bool) -> AgentFn:
    """The sample agent with a client the user built (not ``AutoGenAdapter.model_for``)."""

    async def solve(task: Task, ctx: EpisodeContext) -> str | None:
        client = OpenAIChatCompletionClient(
            model=MODEL,
            base_url=ctx.base_url,
            api_key=ctx.api_key,
            model_info=DEFAULT_MODEL_INFO,
            include_name_in_message=False,
        )
        agent = assistant("assistant", client, task, tools=True, stream=stream)
        return final_text(await agent.run(task=str(task.data["question"])))

    return solve


def no_tool_agent(*, declared: bool, stream: bool = False) -> AgentFn:
    """A standalone assistant without tools (one call); ``declared``: its client is made with
    ``AutoGenAdapter.model_for(..., agent="assistant")``."""

    async def solve(task: Task, ctx: EpisodeContext) -> str | None:
        client = AutoGenAdapter.model_for(ctx, MODEL, agent="assistant" if declared else None)
        agent = assistant("assistant", client, task, tools=False, stream=stream)
        return final_text(await agent.run(task=str(task.data["question"])))

    return solve


def team_agent(kind: TeamKind, *, stream: bool = False) -> AgentFn:
    """Two assistants in a team: ``researcher`` (calls ``lookup``, then answers) and
    ``writer`` (no tools, one call); two turns. The selector team picks the speaker with its
    own LLM call."""

    async def solve(task: Task, ctx: EpisodeContext) -> str | None:
        client = AutoGenAdapter.model_for(ctx, MODEL)
        researcher = assistant("researcher", client, task, tools=True, stream=stream)
        writer = assistant("writer", client, task, tools=False, stream=stream)
        if kind == "round_robin":
            team: RoundRobinGroupChat | SelectorGroupChat = RoundRobinGroupChat(
                [researcher, writer], max_turns=2
            )
        else:
            team = SelectorGroupChat([researcher, writer], model_client=client, max_turns=2)
        return final_text(await team.run(task=str(task.data["question"])))

    return solve


_ROLES = re.compile(r"select the next role from \[([^\]]*)\]")


def selector_responder(
    messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]], params: RequestParams
) -> str:
    """The double's default answers, except that a speaker-selection prompt gets the first
    candidate role's name."""
    text = json.dumps([m.get("content") for m in messages])
    match = _ROLES.search(text)
    if match and not tools:
        candidates = re.findall(r"'([^']+)'", match.group(1).replace("\\'", "'"))
        if candidates:
            return candidates[0]
    return default_responder(messages, tools, params)
