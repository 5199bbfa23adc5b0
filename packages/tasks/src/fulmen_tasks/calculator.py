"""The calculator task: arithmetic questions an agent answers with a calculator tool.

Problems are 2-digit multiplications and 3-digit additions/subtractions, written as
``What is 37*48?``. A model that guesses instead of calling the tool almost never gets the exact
answer, so the task measures whether the agent learned to use its tool.

Everything here is pure Python and deterministic given a seed:

* :func:`generate_problems` / :func:`make_splits`: seeded problem lists (dicts with ``id``,
  ``question``, ``expression``, ``answer``); the train and held-out splits never share an
  expression.
* :func:`calculator`: the tool. It evaluates ``+ - * / // % **`` and parentheses on numbers by
  walking the :mod:`ast` (never ``eval``); any bad input returns a string starting with
  ``error:``.
* :func:`extract_answer` / :func:`check_answer`: the reward, from the assistant's last message.
* :data:`SYSTEM_PROMPT`, :data:`CALCULATOR_TOOL`, :func:`initial_messages`: what the agent
  sends to the model.
"""

from __future__ import annotations

import ast
import math
import random
import re
from typing import Any, TypedDict

from fulmen_tasks.schema import string_tool

__all__ = [
    "CALCULATOR_TOOL",
    "SYSTEM_PROMPT",
    "Problem",
    "calculator",
    "check_answer",
    "extract_answer",
    "format_number",
    "generate_problems",
    "initial_messages",
    "make_splits",
]

SYSTEM_PROMPT = "Use the calculator."
"""System prompt of the calculator agent (short: the reference model reads characters)."""

CALCULATOR_TOOL: dict[str, Any] = string_tool(
    "calculator", "Evaluate an arithmetic expression such as 37*48.", "expression"
)
"""OpenAI tool schema of :func:`calculator`."""

MAX_EXPRESSION_CHARS = 200
"""Longer tool inputs are refused (keeps the tool cheap whatever the model writes)."""
_MAX_ABS_RESULT = 10**30
_MAX_EXPONENT = 64
_NUMBER_RE = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")


class Problem(TypedDict):
    """One calculator problem."""

    id: str
    """Stable id, e.g. ``calc-train-0007``."""
    question: str
    """User message, e.g. ``What is 37*48?``."""
    expression: str
    """The arithmetic the question asks for, e.g. ``37*48``."""
    answer: int
    """Exact integer answer."""


def _random_expression(rng: random.Random) -> tuple[str, int]:
    kind = rng.randrange(3)
    if kind == 0:
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        return f"{a}*{b}", a * b
    a, b = rng.randint(100, 999), rng.randint(100, 999)
    if kind == 1:
        return f"{a}+{b}", a + b
    return f"{a}-{b}", a - b


def generate_problems(
    count: int,
    *,
    seed: int,
    prefix: str = "calc",
    exclude: frozenset[str] | set[str] = frozenset(),
) -> list[Problem]:
    """Generate ``count`` distinct problems, reproducibly from ``seed``.

    A third each are ``a*b`` (2-digit operands), ``a+b`` and ``a-b`` (3-digit operands; the
    difference may be negative). Expressions are unique within the list and never in
    ``exclude``.

    Args:
        count: number of problems (at most a few hundred thousand: the space is finite).
        seed: random seed; the same seed gives the same list.
        prefix: id prefix; ids are ``{prefix}-{index:04d}``.
        exclude: expressions that must not appear (e.g. the held-out set's).

    Raises:
        ValueError: ``count`` is negative or too large.
    """
    if count < 0 or count > 200_000:
        raise ValueError(f"generate_problems: count must be in [0, 200000], got {count}")
    rng = random.Random(seed)
    seen: set[str] = set(exclude)
    problems: list[Problem] = []
    while len(problems) < count:
        expression, answer = _random_expression(rng)
        if expression in seen:
            continue
        seen.add(expression)
        problems.append(
            Problem(
                id=f"{prefix}-{len(problems):04d}",
                question=f"What is {expression}?",
                expression=expression,
                answer=answer,
            )
        )
    return problems


def make_splits(
    *, seed: int = 0, n_train: int = 1000, n_eval: int = 100
) -> tuple[list[Problem], list[Problem]]:
    """Return ``(train, held_out)`` problem lists that share no expression.

    Ids are ``calc-train-NNNN`` and ``calc-eval-NNNN``. The held-out list depends only on
    ``seed`` and ``n_eval``, so changing ``n_train`` never changes what is evaluated.
    """
    held_out = generate_problems(n_eval, seed=seed * 2 + 1, prefix="calc-eval")
    train = generate_problems(
        n_train,
        seed=seed * 2 + 2,
        prefix="calc-train",
        exclude={p["expression"] for p in held_out},
    )
    return train, held_out


def initial_messages(problem: Problem) -> list[dict[str, Any]]:
    """The conversation's start, as the calculator agent sends it: system prompt, question."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": problem["question"]},
    ]


class _EvalError(ValueError):
    pass


def _eval_node(node: ast.AST) -> int | float:
    if isinstance(node, ast.Expression):
        return _eval_node(node.body)
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
        raise _EvalError(f"unsupported constant {value!r}: only numbers are allowed")
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd | ast.USub):
        value = _eval_node(node.operand)
        return value if isinstance(node.op, ast.UAdd) else -value
    if isinstance(node, ast.BinOp):
        left, right = _eval_node(node.left), _eval_node(node.right)
        op = node.op
        if isinstance(op, ast.Add):
            result = left + right
        elif isinstance(op, ast.Sub):
            result = left - right
        elif isinstance(op, ast.Mult):
            result = left * right
        elif isinstance(op, ast.Div | ast.FloorDiv | ast.Mod):
            if right == 0:
                raise _EvalError("division by zero")
            if isinstance(op, ast.Div):
                result = left / right
            elif isinstance(op, ast.FloorDiv):
                result = left // right
            else:
                result = left % right
        elif isinstance(op, ast.Pow):
            if abs(right) > _MAX_EXPONENT:
                raise _EvalError(f"exponent {right} is too large (limit {_MAX_EXPONENT})")
            if left == 0 and right < 0:
                raise _EvalError("division by zero")
            result = left**right
        else:
            raise _EvalError(f"operator {type(op).__name__} is not supported")
        if isinstance(result, complex):
            raise _EvalError("result is not a real number")
        if abs(result) > _MAX_ABS_RESULT:
            raise _EvalError("result is too large")
        return result
    raise _EvalError(
        f"unsupported syntax {type(node).__name__}: use numbers, + - * / // % ** and parentheses"
    )


def format_number(value: int | float) -> str:
    """Render a number the way the tool prints it: integers exactly, floats to 10
    significant digits without trailing zeros (``2.5``, ``0.3333333333``)."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.10g}"
    return str(value)


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression safely and return the result as text.

    Supports integers and decimals, ``+ - * / // % **`` (exponent at most 64 in absolute value),
    unary signs and parentheses. Nothing is executed: the expression is parsed with :mod:`ast`
    and only number nodes and those operators are evaluated.

    Returns:
        The result (``"1776"``, ``"2.5"``), or a message starting with ``"error:"`` saying what
        was wrong (syntax, unsupported construct, division by zero, too large, too long).
    """
    if not isinstance(expression, str):  # pyright: ignore[reportUnnecessaryIsInstance]
        return f"error: expression must be a string, got {type(expression).__name__}"
    text = expression.strip()
    if not text:
        return "error: empty expression"
    if len(text) > MAX_EXPRESSION_CHARS:
        return f"error: expression longer than {MAX_EXPRESSION_CHARS} characters"
    try:
        tree = ast.parse(text.replace("^", "**"), mode="eval")
    except SyntaxError:
        return f"error: cannot parse {text!r} as arithmetic"
    try:
        return format_number(_eval_node(tree))
    except _EvalError as exc:
        return f"error: {exc}"
    except (OverflowError, ValueError) as exc:
        return f"error: {exc}"


def extract_answer(text: str | None) -> float | None:
    """Return the last number in ``text`` (``-12``, ``1,776``, ``2.5``), or None if there is none.

    Thousands separators of the form ``1,776`` are accepted. A trailing sentence period is not
    part of the number.
    """
    if not text:
        return None
    matches = _NUMBER_RE.findall(text)
    if not matches:
        return None
    return float(matches[-1].replace(",", ""))


def check_answer(text: str | None, answer: int | float) -> bool:
    """True when the last number in ``text`` equals ``answer`` (within 1e-6 relative)."""
    value = extract_answer(text)
    if value is None:
        return False
    return math.isclose(value, float(answer), rel_tol=1e-6, abs_tol=1e-9)
