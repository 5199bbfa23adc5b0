"""A tool-chain agent: plain OpenAI-client code that follows a chain of keys with a ``get``
tool until it finds a value (``Find the value of k7q.`` may take up to four dependent calls).

Nothing here knows about RL: fulmen hands the agent its episode's base URL (``ctx.base_url``)
and scores the final message with :func:`reward`, which accepts only the stated form
``The answer is N.`` (:func:`fulmen_tasks.chain.check_final_answer`).
"""

from __future__ import annotations

import json
from typing import Any, cast

from fulmen import EpisodeContext, Task
from fulmen_tasks.chain import (
    GET_TOOL,
    ChainProblem,
    check_final_answer,
    initial_messages,
    lookup,
    make_splits,
)
from openai import OpenAI
from openai.types.chat import ChatCompletionToolParam

MODEL_NAME = "policy"
"""The model name the agent asks for (the served policy)."""
MAX_CALLS = 6
"""LLM calls per episode: a 4-key chain needs 5 (four lookups and the answer)."""
TOOLS: list[ChatCompletionToolParam] = [cast(ChatCompletionToolParam, GET_TOOL)]


def _tool_result(store: dict[str, str], name: str, arguments: str) -> str:
    """What the environment answers to one tool call (never raises: errors are observations)."""
    if name != "get":
        return f"error: unknown tool {name!r}; the only tool is get"
    try:
        parsed = json.loads(arguments)
    except json.JSONDecodeError:
        return 'error: arguments must be JSON like {"key": "k7q"}'
    return lookup(store, parsed.get("key") if isinstance(parsed, dict) else None)


def recent(messages: list[Any]) -> list[Any]:
    """What the agent sends: the system prompt and question, then only the latest assistant turn
    and its tool results (the agent keeps its prompt short; the last result names the next key,
    so nothing older is needed). Every call's prompt thus has the shape of a demonstrated one,
    whatever the chain's length: what grows with the chain is the number of calls in a row
    that must all be right."""
    last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
    return messages if last is None else messages[:2] + messages[last:]


def solve(task: Task, ctx: EpisodeContext) -> str | None:
    """Run the agent on one question; returns its final message (None if it never gave one)."""
    client = OpenAI(base_url=ctx.base_url, api_key=ctx.api_key, timeout=120.0, max_retries=0)
    problem = cast(ChainProblem, task.data)
    messages: list[Any] = initial_messages(problem)
    for _ in range(MAX_CALLS):
        response = client.chat.completions.create(
            model=MODEL_NAME, messages=recent(messages), tools=TOOLS, max_tokens=96
        )
        message = response.choices[0].message
        if not message.tool_calls:
            return message.content
        messages.append(message.model_dump(exclude_none=True))
        for call in message.tool_calls:
            name, arguments = (call.function.name, call.function.arguments) if call.type == "function" else ("", "")
            messages.append({"role": "tool", "tool_call_id": call.id, "content": _tool_result(problem["store"], name, arguments)})
    return None


def reward(task: Task, output: str | None, ctx: EpisodeContext) -> float:
    """1.0 when the final message is exactly ``The answer is N.`` with the right N, else 0.0."""
    return 1.0 if check_final_answer(output, int(task.data["answer"])) else 0.0


def train_tasks() -> list[ChainProblem]:
    """The training split: chains of 2-4 keys (seeded)."""
    return make_splits(seed=0)[0]


def eval_tasks() -> list[ChainProblem]:
    """The held-out split: chains of 3-4 keys, longer than any demonstration."""
    return make_splits(seed=0)[1]
