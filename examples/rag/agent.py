"""A retrieval-augmented QA agent written with the OpenAI Agents SDK, trained by fulmen.

An ordinary Agents SDK ``Agent`` with one ``@function_tool``, ``search``, that returns the best
BM25 document of the corpus (:mod:`examples.rag.corpus`). The agent searches for the entity
the question names, reads the document, searches again for the entity that document names when
the question needs a second hop, and answers ``Answer: ...``. Reward: token F1 of the answer
(:mod:`examples.rag.scoring`); exact match is reported beside it (``em.toml``).

Two lines are fulmen's: ``ADAPTER.attach()`` (the adapter records the agent's name, turns and
tool results) and ``run_config=ADAPTER.model_for(ctx)`` (the run's model calls go to the
episode).
Bad model output is an observation, never a crash: arguments that do not parse come back to
the model as ``error: ...``; a conversation that outgrows the model's context, too many turns or
a call of an unknown tool end the episode without an answer (reward 0).
"""

from __future__ import annotations

import os
import random
from typing import Any

import openai
from agents import (
    Agent,
    MaxTurnsExceeded,
    ModelBehaviorError,
    ModelSettings,
    RunContextWrapper,
    Runner,
    function_tool,
)
from fulmen import EpisodeContext, Task
from fulmen_openai import AgentsSDKAdapter

from examples.rag import corpus
from examples.rag.questions import make_splits
from examples.rag.scoring import exact_match, f1

__all__ = [
    "ADAPTER",
    "AGENT",
    "SYSTEM_PROMPT",
    "eval_tasks",
    "exact_match_reward",
    "held_out_tasks",
    "reward",
    "solve",
    "train_tasks",
]

MODEL_NAME = "policy"
"""The model name the trainer serves (``[model] name``)."""
AGENT_NAME = "researcher"
"""The agent's name: what fulmen records for its calls."""
SYSTEM_PROMPT = "Search, then answer."
"""The instructions (short: the reference model reads characters; the chat template adds the
tools line ``Tools: search(query)``)."""
MAX_TURNS = 3
"""Model calls per episode, at most: two searches and the answer."""
MAX_TOKENS = int(os.environ.get("FULMEN_RAG_MAX_TOKENS", "64"))
"""Tokens per model call (a search call is under 60 characters); raise it for a real model."""
EVAL_SIZE = 150
"""Held-out questions evaluated (a seeded, level-balanced sample of :func:`held_out_tasks`)."""

ADAPTER = AgentsSDKAdapter()
"""Attached on the first episode, for the life of the training process."""


def _bad_arguments(ctx: RunContextWrapper[Any], error: Exception) -> str:
    """What the model sees when its tool arguments do not parse (short: a 512-token context)."""
    return "error: search needs a query"


@function_tool(failure_error_function=_bad_arguments, strict_mode=False)
def search(query: str) -> str:
    """Search the encyclopedia; returns the best matching entry.

    Args:
        query: a name to look up.
    """
    return corpus.search(str(query))


AGENT: Agent[Any] = Agent(
    name=AGENT_NAME,
    instructions=SYSTEM_PROMPT,
    tools=[search],
    model_settings=ModelSettings(max_tokens=MAX_TOKENS),
)


async def solve(task: Task, ctx: EpisodeContext) -> str | None:
    """Run the agent on one question; returns its final text (None when it gave none)."""
    ADAPTER.attach()  # idempotent: the first episode attaches, the others find it attached
    try:
        result = await Runner.run(
            AGENT,
            str(task.data["question"]),
            run_config=ADAPTER.model_for(ctx, MODEL_NAME),
            max_turns=MAX_TURNS,
        )
    except MaxTurnsExceeded:
        return None  # kept searching: no answer
    except ModelBehaviorError:
        return None  # called a tool that does not exist
    except openai.BadRequestError as exc:
        if "maximum context length" not in str(exc):
            raise
        return None  # the conversation outgrew the model's context
    output = result.final_output
    return None if output is None else str(output)


def reward(task: Task, output: str | None, ctx: EpisodeContext) -> float:
    """Token F1 of the final answer against the gold answer (the training reward)."""
    return f1(output, str(task.data["answer"]))


def exact_match_reward(task: Task, output: str | None, ctx: EpisodeContext) -> float:
    """Exact match of the final answer (``em.toml``: success rate = exact-match rate)."""
    return exact_match(output, str(task.data["answer"]))


def train_tasks() -> list[dict[str, Any]]:
    """The training split (seeded)."""
    return [dict(q) for q in make_splits(seed=0)[0]]


def held_out_tasks() -> list[dict[str, Any]]:
    """The whole held-out split (no root entity shared with training)."""
    return [dict(q) for q in make_splits(seed=0)[1]]


def eval_tasks() -> list[dict[str, Any]]:
    """:data:`EVAL_SIZE` held-out questions: half single-hop, half multi-hop, seeded order."""
    held = held_out_tasks()
    single = [q for q in held if q["level"] == "single"]
    multi = [q for q in held if q["level"] == "multi"]
    rng = random.Random("rag-eval:0")
    picked = rng.sample(single, EVAL_SIZE // 2) + rng.sample(multi, EVAL_SIZE - EVAL_SIZE // 2)
    rng.shuffle(picked)
    return picked
