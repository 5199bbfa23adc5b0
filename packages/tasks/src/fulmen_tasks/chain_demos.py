"""Demonstrations of the tool-chain task, for a supervised warm start before RL.

Every demonstration is correct: one ``get`` call per key of the chain, each on the key the
previous result named, then ``The answer is N.``. No bad habit is planted. The demonstrations
have chains of **1 or 2 keys only** (three in four have one key, so a key is copied from a
tool result in few of them), while the training split asks for 2-4 and the held-out split for
3-4 (:func:`fulmen_tasks.chain.make_splits`), so held-out success needs chains
longer than any demonstrated. (How hard that is depends on what the agent sends: with the
whole history in every prompt the tiny reference model fails every chain longer than its
demonstrations, as its prompts grow past any length it was trained on; with the example
agent's short prompts, which keep only the latest exchange, a fully warm-started model follows
chains of any length. ``examples/tool_chain/model.py`` says where the base stands.)
Deterministic given the seed; no demonstration starts at a held-out first key.
"""

from __future__ import annotations

import json

from fulmen_tasks.calculator_demos import Demonstration
from fulmen_tasks.chain import (
    GET_TOOL,
    ChainProblem,
    generate_problems,
    initial_messages,
    make_splits,
    solution_steps,
)

__all__ = ["DEMO_LENGTHS", "demonstration", "demonstrations"]

DEMO_LENGTHS = (1, 1, 1, 2)
"""Keys per demonstrated chain, cycled: 1, 1, 1, 2, 1, ... (shorter than every held-out chain)."""


def demonstration(problem: ChainProblem) -> Demonstration:
    """The solved conversation of ``problem``: one ``get`` call per key, then the answer.

    ``copied`` (latest first): the answer with its period, then each call's key with its
    closing quote (copied from the question or the last tool result)."""
    messages = initial_messages(problem)
    copied: list[str] = []
    for k, (key, observation) in enumerate(solution_steps(problem)):
        call = {
            "id": f"call_{k}",
            "type": "function",
            "function": {"name": "get", "arguments": json.dumps({"key": key})},
        }
        messages += [
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": f"call_{k}", "content": observation},
        ]
        copied.append(key + '"')
    messages.append({"role": "assistant", "content": f"The answer is {problem['answer']}."})
    copied.append(f"{problem['answer']}.")
    return Demonstration(messages, [GET_TOOL], copied=tuple(reversed(copied)), uses_tool=True)


def demonstrations(count: int, *, seed: int, split_seed: int = 0, n_eval: int = 96) -> list[Demonstration]:
    """``count`` demonstrations of fresh chains of :data:`DEMO_LENGTHS` keys, none starting at a
    first key of the held-out split ``make_splits(seed=split_seed, n_eval=n_eval)``."""
    _, held_out = make_splits(seed=split_seed, n_eval=n_eval)
    problems = generate_problems(
        count, seed=seed + 7919, lengths=DEMO_LENGTHS, prefix="demo",
        exclude={p["keys"][0] for p in held_out},
    )
    return [demonstration(p) for p in problems]
