"""The tool-chain task: follow a chain of references with a lookup tool, 1-4 dependent calls.

Each problem is a small key-value store in which a key points to another key or holds the
answer. The question names the first key (``Find the value of k7q.``); the tool :func:`lookup`
(``get``) returns ``see m3x`` (look that key up next) or ``value 512`` (the answer), so a chain
of n keys takes n dependent calls, each on the key the previous result named::

    get({"key": "k7q"}) -> "see m3x", get({"key": "m3x"}) -> "see p0a", get({"key": "p0a"})
    -> "value 512" -> "The answer is 512."

A mistyped key returns ``error: no key ...``; the store is the episode's environment, so the
same task always gives the same observations and states repeat across a group's episodes.

The reward reads the answer's stated form (:func:`check_final_answer`): the final message must
be exactly ``The answer is N.``; a number buried in other text (a broken tool call, a sentence
that ends in a number) scores 0.

Splits (:func:`make_splits`) are seeded and share no first key. Training has chains of 2-4
keys, the held-out split only 3-4; the warm-start demonstrations
(:mod:`fulmen_tasks.chain_demos`) show only 1-2, so held-out success needs a chain longer than
any the base model was shown.
"""

from __future__ import annotations

import random
import string
from collections.abc import Mapping, Sequence
from itertools import pairwise
from typing import Any, TypedDict

from fulmen_tasks.schema import string_tool

__all__ = [
    "GET_TOOL",
    "SYSTEM_PROMPT",
    "ChainProblem",
    "check_final_answer",
    "generate_problems",
    "initial_messages",
    "lookup",
    "make_splits",
    "solution_steps",
]

SYSTEM_PROMPT = "Look keys up with get until you find a value."
"""System prompt of the tool-chain agent."""

GET_TOOL: dict[str, Any] = string_tool(
    "get", "Look a key up: returns 'see <key>' or 'value <number>'.", "key"
)
"""OpenAI tool schema of :func:`lookup` (short names: the reference model reads characters)."""

_KEY_CHARS = string.ascii_lowercase + string.digits
_ANSWER_PREFIX = "The answer is "


class ChainProblem(TypedDict):
    """One tool-chain problem."""

    id: str
    """Stable id, e.g. ``chain-train-0007``."""
    question: str
    """User message, e.g. ``Find the value of k7q.``"""
    store: dict[str, str]
    """The environment: key -> ``see <key>`` or ``value <n>``."""
    keys: list[str]
    """The chain, first key first (its length is the number of calls needed)."""
    answer: int
    """The value at the end of the chain."""


def solution_steps(problem: ChainProblem) -> list[tuple[str, str]]:
    """The calls that solve ``problem``: ``(key, observation)`` per lookup."""
    return [(key, problem["store"][key]) for key in problem["keys"]]


def _new_key(rng: random.Random, taken: set[str]) -> str:
    while True:
        key = "".join(rng.choice(_KEY_CHARS) for _ in range(3))
        if key not in taken:
            taken.add(key)
            return key


def generate_problems(
    count: int,
    *,
    seed: int,
    lengths: Sequence[int],
    prefix: str = "chain",
    exclude: frozenset[str] | set[str] = frozenset(),
) -> list[ChainProblem]:
    """``count`` problems, reproducibly from ``seed``; problem ``i`` has a chain of
    ``lengths[i % len(lengths)]`` keys. First keys are unique and never in ``exclude``.

    Raises:
        ValueError: ``count`` out of [0, 20000], or a length outside 1-4.
    """
    if count < 0 or count > 20_000:
        raise ValueError(f"generate_problems: count must be in [0, 20000], got {count}")
    if not lengths or any(n not in (1, 2, 3, 4) for n in lengths):
        raise ValueError(f"generate_problems: lengths must be 1-4 keys, got {list(lengths)}")
    rng = random.Random(seed)
    firsts: set[str] = set(exclude)
    problems: list[ChainProblem] = []
    while len(problems) < count:
        first = _new_key(rng, firsts)
        taken = {first}
        keys = [first] + [_new_key(rng, taken) for _ in range(lengths[len(problems) % len(lengths)] - 1)]
        answer = rng.randint(100, 999)
        store = {key: f"see {after}" for key, after in pairwise(keys)}
        store[keys[-1]] = f"value {answer}"
        problems.append(
            ChainProblem(
                id=f"{prefix}-{len(problems):04d}", question=f"Find the value of {first}.",
                store=store, keys=keys, answer=answer,
            )
        )
    return problems


def make_splits(
    *, seed: int = 0, n_train: int = 1200, n_eval: int = 96
) -> tuple[list[ChainProblem], list[ChainProblem]]:
    """``(train, held_out)``: training chains of 2, 3 and 4 keys (a third each), held-out chains
    of 3 and 4 (half each); no first key in both. The held-out list depends only on ``seed``
    and ``n_eval``."""
    held_out = generate_problems(n_eval, seed=seed * 2 + 1, lengths=(3, 4), prefix="chain-eval")
    train = generate_problems(
        n_train, seed=seed * 2 + 2, lengths=(2, 3, 4), prefix="chain-train",
        exclude={p["keys"][0] for p in held_out},
    )
    return train, held_out


def initial_messages(problem: ChainProblem) -> list[dict[str, Any]]:
    """The conversation's start, as the agent sends it: system prompt, question."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": problem["question"]},
    ]


def lookup(store: Mapping[str, str], key: object) -> str:
    """The tool: ``store[key]`` (``see <key>`` or ``value <n>``), or a line starting with
    ``error:`` for a key that is not there or not a string."""
    if not isinstance(key, str):
        return 'error: get needs {"key": "<key>"}'
    found = store.get(key.strip())
    return found if found is not None else f"error: no key {key.strip()!r}"


def check_final_answer(text: str | None, answer: int) -> bool:
    """True when ``text`` is exactly ``The answer is N.`` (surrounding whitespace aside) with
    ``N`` equal to ``answer``."""
    if text is None:
        return False
    body = text.strip()
    return body == f"{_ANSWER_PREFIX}{answer}."
