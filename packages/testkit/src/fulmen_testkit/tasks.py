"""The kit's sample tasks and the body of the sample agent's one tool.

Every adapter's sample agent answers ``task.data["question"]`` with one tool, named
:data:`TOOL_NAME`, taking one string argument ``query``, whose body is :func:`lookup`. The
task's ``mode`` makes the tool behave in the ways the standard tests need.
"""

from __future__ import annotations

from typing import Literal

import fulmen
from fulmen import Task
from fulmen.errors import FulmenError

__all__ = ["MODEL", "TOOL_NAME", "TOOL_REWARD", "KitToolError", "Mode", "kit_task", "lookup"]

MODEL = "tiny"
"""Model name the sample agent must ask for (the test upstream serves this name)."""
TOOL_NAME = "lookup"
"""Name of the sample agent's tool."""
TOOL_DESCRIPTION = "Look up a fact for the question. Returns the fact as text."
"""Description to give the tool."""
TOOL_REWARD = 0.25
"""Value of the reward the tool emits in ``reward`` mode (name ``"tool"``, step current)."""

Mode = Literal["ok", "reward", "tool_error"]


class KitToolError(FulmenError, RuntimeError):
    """Raised by :func:`lookup` in ``tool_error`` mode: the user's tool failing."""


def kit_task(index: int, mode: Mode = "ok") -> Task:
    """Task ``kit-{index}`` whose question and tool output carry that marker."""
    marker = f"kit-{index}"
    return Task(
        id=marker,
        data={"question": f"What is the code of item {marker}?", "marker": marker, "mode": mode},
    )


def lookup(task: Task, query: str) -> str:
    """The sample tool's body: the answer for ``task`` (a string containing its marker).

    ``reward`` mode also emits ``fulmen.reward(TOOL_REWARD, name="tool", step="current")``;
    ``tool_error`` mode raises :class:`KitToolError`.
    """
    marker = str(task.data["marker"])
    mode = task.data.get("mode", "ok")
    if mode == "tool_error":
        raise KitToolError(f"lookup failed for {marker}")
    if mode == "reward":
        fulmen.reward(TOOL_REWARD, name="tool", step="current")
    return f"code-of-{marker}"
