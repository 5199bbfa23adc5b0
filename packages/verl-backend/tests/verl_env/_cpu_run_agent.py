"""The agent of the verl CPU session's job: one chat call per episode, rewarded by the share of digits
in the reply (a dense reward, so every GRPO group has spread and the update is never empty)."""

from __future__ import annotations

from fulmen import EpisodeContext, Task
from openai import OpenAI

QUESTIONS = [f"What is {a}+{b}?" for a in range(3, 9) for b in range(2, 6)]


def tasks() -> list[Task]:
    """Twenty-four arithmetic questions."""
    return [Task(id=f"q{i}", data={"question": q}) for i, q in enumerate(QUESTIONS)]


def eval_tasks() -> list[Task]:
    """Four held-out questions."""
    return [Task(id=f"e{i}", data={"question": f"What is {i}+9?"}) for i in range(4)]


def solve(task: Task, ctx: EpisodeContext) -> str:
    """Ask the policy once; return its reply."""
    client = OpenAI(base_url=ctx.base_url, api_key=ctx.api_key, timeout=120.0, max_retries=0)
    reply = client.chat.completions.create(
        model="policy",
        messages=[{"role": "user", "content": task.data["question"]}],
        max_tokens=16,
    )
    return reply.choices[0].message.content or ""


def reward(task: Task, output: str | None, ctx: EpisodeContext) -> float:
    """Share of digits in the reply."""
    text = output or ""
    return sum(c.isdigit() for c in text) / max(len(text), 1)
