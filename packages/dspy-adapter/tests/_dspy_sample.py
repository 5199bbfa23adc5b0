"""The DSPy sample agent of the conformance kit, and the upstream text that drives it.

``dspy.ReAct`` does not use OpenAI tool calls: each step asks the model for the fields
``next_thought``, ``next_tool_name`` and ``next_tool_args`` in DSPy's ChatAdapter text format
(``[[ ## field ## ]]`` markers). :func:`react_responder` plays a model that calls ``lookup``
once, then ``finish``, and answers the extract step with the tool's result: three LLM calls
per episode (react, react, extract.predict).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from typing import Any

import dspy
from fulmen import EpisodeContext, Task
from fulmen.runner import AgentFn
from fulmen_dspy import DSPyAdapter
from fulmen_testkit import MODEL, TOOL_DESCRIPTION, TOOL_NAME, lookup
from fulmen_testkit.vllm_double.generation import RequestParams

__all__ = ["fields", "make_react_agent", "react_responder"]


def fields(**values: str) -> str:
    """Model text in DSPy's ChatAdapter format for the given output fields."""
    body = "".join(f"[[ ## {name} ## ]]\n{value}\n\n" for name, value in values.items())
    return f"{body}[[ ## completed ## ]]"


def _section(text: str, name: str) -> str | None:
    match = re.search(rf"\[\[ ## {name} ## \]\]\n(.*?)(?=\n\n\[\[ ## |\Z)", text, re.DOTALL)
    return match.group(1).strip() if match else None


def react_responder(
    messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]], params: RequestParams
) -> str:
    """Scripted model for the kit's ReAct agent (see the module docstring)."""
    system = str(messages[0].get("content", "")) if messages else ""
    user = str(messages[-1].get("content", "")) if messages else ""
    observation = _section(user, "observation_0")
    if "next_tool_name" in system:
        if observation is None:
            marker = re.search(r"kit-\d+", user)
            query = marker.group(0) if marker else "code"
            return fields(
                next_thought="I should look the code up.",
                next_tool_name=TOOL_NAME,
                next_tool_args=f'{{"query": "{query}"}}',
            )
        return fields(next_thought="I have the code.", next_tool_name="finish", next_tool_args="{}")
    # Any other predictor (ReAct's extract step, Predict, ChainOfThought): fill the fields it
    # asks for. The answer never quotes a failed tool's traceback: DSPy's traceback text
    # differs with and without callbacks registered (its callback wrapper is a frame).
    found = observation if observation and "code-of-" in observation else "unknown"
    values = {"reasoning": "The trajectory has the code.", "answer": f"The answer is {found}."}
    asked: list[str] = re.findall(r"\[\[ ## (\w+) ## \]\]", user.rpartition("Respond with")[2])
    return fields(**{name: values.get(name) or name for name in asked if name != "completed"})


def _program(task: Task) -> dspy.ReAct:
    def lookup_tool(query: str) -> str:
        return lookup(task, query)

    tool = dspy.Tool(lookup_tool, name=TOOL_NAME, desc=TOOL_DESCRIPTION)
    # DSPy's hint says type[Signature]; it takes signature strings (ensure_signature).
    return dspy.ReAct("question -> answer", tools=[tool], max_iters=3)  # pyright: ignore[reportArgumentType]


def make_react_agent(*, stream: bool = False, use_async: bool = False) -> AgentFn:
    """The kit's sample agent: ``dspy.ReAct`` with the ``lookup`` tool, one per episode."""

    def solve(task: Task, ctx: EpisodeContext) -> str:
        program = _program(task)
        with dspy.context(lm=DSPyAdapter.model_for(ctx, MODEL)):
            if not stream:
                return str(program(question=task.data["question"]).answer)
            streamed = dspy.streamify(program, async_streaming=False)
            # DSPy's hint for the returned streamer is wrong (it takes the program's kwargs).
            values = streamed(question=task.data["question"])  # pyright: ignore[reportCallIssue]
            final = [v for v in values if isinstance(v, dspy.Prediction)]
            return str(final[-1].answer)

    async def asolve(task: Task, ctx: EpisodeContext) -> str:
        program = _program(task)
        with dspy.context(lm=DSPyAdapter.model_for(ctx, MODEL)):
            if not stream:
                prediction = await program.acall(question=task.data["question"])
                return str(prediction.answer)
            streamed = dspy.streamify(program, is_async_program=True)
            final: list[dspy.Prediction] = []
            async for value in streamed(question=task.data["question"]):  # pyright: ignore[reportCallIssue]
                if isinstance(value, dspy.Prediction):
                    final.append(value)
            await asyncio.sleep(0)
            return str(final[-1].answer)

    return asolve if use_async else solve
