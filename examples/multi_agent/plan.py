"""The planner's scores (pure functions: importing this module attaches no framework adapter).

* :func:`plan_quality`, the planner's trained reward (``name="plan"``): a decomposition score,
  the plan checked against the task's ground truth (its expression);
* :func:`plan_score`, the format check the example used before (``name="plan_format"``,
  recorded, not trained): the base model already passes it, so it cannot tell planners apart.
"""

from __future__ import annotations

import re
from collections import Counter

__all__ = ["plan_quality", "plan_score"]


def plan_score(plan: str | None) -> float:
    """Format only (recorded as ``plan_format``, not trained): 1.0 for a plan in words (one
    non-empty line of text, at most 120 characters, not a tool call), else 0.0. The base model
    already passes it, so it cannot tell a better planner from a worse one: see
    :func:`plan_quality`."""
    text = (plan or "").strip()
    return 1.0 if text and len(text) <= 120 and "\n" not in text and "<tool_call>" not in text else 0.0


_OPERATIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "*": (r"[*x\u00d7]", ("times", "multiply", "multiplied", "multiplying", "product")),
    "+": (r"\+", ("plus", "add", "added", "adding", "sum")),
    "-": (r"-", ("minus", "subtract", "subtracted", "subtracting", "difference")),
}
"""Each operation of the task: the symbol a plan may write between two numbers, and its words."""


def _names_operation(text: str, op: str) -> bool:
    symbol, words = _OPERATIONS[op]
    if re.search(rf"\d\s*{symbol}\s*\d", text):
        return True
    return any(re.search(rf"\b{w}\b", text) for w in words)


def plan_quality(plan: str | None, expression: str) -> float:
    """The planner's decomposition score, checked against the task's ground truth.

    The planner has no tools: its job is to hand the solver the right sub-step, "compute
    ``a op b`` with the calculator", for the task's expression (e.g. ``37*48``). Three checks,
    each worth 1/3:

    1. **operands**: both of the task's operands appear in the plan as numbers;
    2. **operation**: the plan names the task's operation (its symbol between two numbers, or a
       word: times/multiply/product, plus/add/sum, minus/subtract/difference) and no other;
    3. **delegation**: with the operands named, the plan states no other number: no answer, no
       guess (the calculator computes, not the planner).

    So ``"Use the calculator on 37*48."`` scores 1, ``"Multiply 37 by 48 = 1776."`` 2/3 (it
    asserts a result), ``"The answer is 1776."`` (a guess) 0, as
    does an empty plan. A calculator tool call written as text with the right expression also
    scores 1: it names the right route and sub-step.

    Raises:
        ValueError: ``expression`` is not ``<int><op><int>`` with op one of ``* + -``.
    """
    match = re.fullmatch(r"(\d+)([*+-])(\d+)", expression.replace(" ", ""))
    if match is None:
        raise ValueError(f"plan_quality: expected an expression like '37*48', got {expression!r}")
    a, op, b = match.groups()
    text = (plan or "").lower()
    numbers = Counter(re.findall(r"\d+", text))
    wanted = Counter((a, b))
    operands = all(numbers[k] >= v for k, v in wanted.items())
    operation = _names_operation(text, op) and not any(
        _names_operation(text, other) for other in _OPERATIONS if other != op
    )
    delegation = operands and not (numbers - wanted)
    return (operands + operation + delegation) / 3
