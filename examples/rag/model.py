"""Builds the retrieval-augmented QA example's base model: the tiny character-level Llama of
``fulmen_local`` (``tiny`` preset, 512-token context), warm-started on search demonstrations.

Demonstrations are rendered through the model's chat template exactly as the agent's
conversations look (the Agents SDK sends the same messages)::

    system "Search, then answer." + tools line, user "In which region is the hometown of X?"
    -> assistant <tool_call>{"name": "search", "arguments": {"query": "X"}}</tool_call>
    -> tool "X: a painter from Duskmoor, ..." -> assistant <tool_call>... "Duskmoor" ...
    -> tool "Duskmoor: a town in Vell, ..." -> assistant "Answer: Vell"

Bad demonstrations answer at once, without searching, with a wrong answer of the right kind
(another town, another year), or — for multi-hop questions — search once and then answer with a
wrong guess, without the second hop. As in the calculator's warm start they appear only in the
last ``guess_phase`` of the steps; there, a question is a guess with probability
``bad_fraction`` and, for multi-hop questions, stops after one hop with probability
``one_hop_fraction``. So the base agent mostly answers unchecked under greedy decoding, while
sampling searches often enough for GRPO to learn from. The characters the assistant copies (the
query, the answer) weigh ``copy_weight`` in the loss.

Demonstrations use training questions only. Deterministic from the seed and the thread count;
``fulmen train`` calls :func:`build` when ``[model] path`` holds no model yet.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from fulmen_local.model.build import build_tiny_model
from fulmen_local.model.supervised import save_warm_start, train_on_demos
from fulmen_local.model.tokenizer import build_tokenizer, encode_chat_with_mask
from transformers import PreTrainedTokenizerBase

from examples.rag import corpus
from examples.rag.agent import SYSTEM_PROMPT, search
from examples.rag.questions import Question, make_splits

__all__ = [
    "SEARCH_TOOL",
    "WARM_START",
    "RagDemo",
    "build",
    "build_smoke",
    "render_demo",
    "warm_start",
]

WARM_START: dict[str, Any] = {
    "seed": 0,
    "steps": 1800,
    "bad_fraction": 0.5,
    "one_hop_fraction": 0.2,
    "guess_phase": 0.2,
    "copy_weight": 10.0,
    "batch_size": 8,
    "lr": 1e-3,
}
"""Warm-start settings of the base model (see :func:`warm_start`)."""

SEARCH_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {"name": search.name, "description": search.description,
                 "parameters": search.params_json_schema},
}
"""The search tool as the agent offers it (the chat template renders ``search(query)``)."""


@dataclass(frozen=True, slots=True)
class RagDemo:
    """One rendered demonstration."""

    input_ids: list[int]
    weights: list[float]
    """Loss weight per token: 0 outside assistant turns, 1 on assistant tokens, ``copy_weight``
    on the copied query and answer characters."""
    searches: int
    """How many searches the demonstration makes (0: a guess)."""


def render_demo(
    tokenizer: PreTrainedTokenizerBase,
    question: Question,
    *,
    searches: int | None = None,
    answer: str | None = None,
    copy_weight: float = 1.0,
) -> RagDemo:
    """Render one demonstration of ``question``.

    Args:
        searches: how many of the question's hops to search (default: all of them).
        answer: the final answer (default: the gold one).
        copy_weight: loss weight of the copied query and answer characters.
    """
    hops = question["hops"] if searches is None else question["hops"][:searches]
    final = question["answer"] if answer is None else answer
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": question["question"]},
    ]
    for i, query in enumerate(hops):
        call = {"id": f"call_{i}", "type": "function",
                "function": {"name": "search", "arguments": json.dumps({"query": query})}}
        messages += [
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": f"call_{i}", "content": corpus.search(query)},
        ]
    messages.append({"role": "assistant", "content": f"Answer: {final}"})
    ids, mask = encode_chat_with_mask(tokenizer, messages, tools=[SEARCH_TOOL])
    weights = [float(m) for m in mask]
    if copy_weight != 1.0:
        for text in [f'{q}"' for q in hops] + [final]:
            pattern = tokenizer.encode(text, add_special_tokens=False)
            n = len(pattern)
            for start in range(len(ids) - n + 1):
                if mask[start] and ids[start : start + n] == pattern:
                    for k in range(start, start + n):
                        weights[k] = copy_weight
    return RagDemo(input_ids=ids, weights=weights, searches=len(hops))


def _wrong(question: Question, pool: list[str], rng: random.Random) -> str:
    while True:
        guess = rng.choice(pool)
        if guess != question["answer"]:
            return guess


def warm_start(
    out_dir: str | Path,
    *,
    seed: int = 0,
    steps: int = 1800,
    bad_fraction: float = 0.5,
    one_hop_fraction: float = 0.2,
    guess_phase: float = 0.2,
    copy_weight: float = 10.0,
    batch_size: int = 8,
    lr: float = 1e-3,
    threads: int = 2,
    log: Callable[[str], None] | None = print,
) -> Path:
    """Train a fresh ``tiny`` model on search demonstrations and save it to ``out_dir``.

    The first ``1 - guess_phase`` of the steps see good demonstrations only; the rest draw each
    demonstration's kind (see the module docstring). AdamW, linear warm-up over 5% of the
    steps, cosine decay to 10% of ``lr``. ``warmstart.json`` next to the weights records the
    settings, the loss and the time.

    Raises:
        ValueError: a setting out of range, or a demonstration longer than the context.
    """
    if steps < 1 or batch_size < 1 or lr <= 0 or copy_weight <= 0:
        raise ValueError("need steps >= 1, batch_size >= 1, lr > 0 and copy_weight > 0")
    if (min(bad_fraction, one_hop_fraction) < 0.0 or bad_fraction + one_hop_fraction > 1.0
            or not 0.0 <= guess_phase <= 1.0):
        raise ValueError("need fractions >= 0, bad + one-hop <= 1 and guess_phase in [0, 1]")
    started = time.perf_counter()
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    train, _ = make_splits(seed=0)
    pools: dict[str, list[str]] = {}
    for q in train:
        pools.setdefault(q["template"], []).append(q["answer"])
    good = [render_demo(tokenizer, q, copy_weight=copy_weight) for q in train]
    longest = max(len(d.input_ids) for d in good)
    model = build_tiny_model(tokenizer, seed=seed, preset="tiny")
    if longest > model.config.max_position_embeddings:
        raise ValueError(f"a demonstration has {longest} tokens, over the model's context")
    pad_id = tokenizer.pad_token_id
    if not isinstance(pad_id, int):
        raise RuntimeError("the tokenizer has no pad token")
    rng = random.Random(seed + 1)
    switch = round(steps * (1.0 - guess_phase))

    def late_demo() -> RagDemo:
        i = rng.randrange(len(train))
        q, draw = train[i], rng.random()
        if draw < bad_fraction:
            wrong = _wrong(q, pools[q["template"]], rng)
            return render_demo(tokenizer, q, searches=0, answer=wrong, copy_weight=copy_weight)
        if q["level"] == "multi" and draw < bad_fraction + one_hop_fraction:
            wrong = _wrong(q, pools[q["template"]], rng)
            return render_demo(tokenizer, q, searches=1, answer=wrong, copy_weight=copy_weight)
        return good[i]

    def next_batch(step: int) -> list[RagDemo]:
        if step >= switch:
            return [late_demo() for _ in range(batch_size)]
        return [good[rng.randrange(len(good))] for _ in range(batch_size)]

    losses = train_on_demos(
        model, next_batch, steps=steps, lr=lr, pad_id=pad_id, clock_start=started, log=log
    )
    settings = {
        "seed": seed, "steps": steps, "bad_fraction": bad_fraction,
        "one_hop_fraction": one_hop_fraction, "guess_phase": guess_phase,
        "copy_weight": copy_weight, "batch_size": batch_size, "lr": lr,
        "demos": len(good), "longest_demo_tokens": longest,
    }
    return save_warm_start(
        model, tokenizer, out_dir, settings, losses, clocks={"seconds": started}, log=log
    )


def build(path: Path) -> Path:
    """Warm-start the base model into ``path``."""
    return warm_start(path, **WARM_START)


def build_smoke(path: Path) -> Path:
    """A few warm-start steps only: for smoke tests of the training loop, not for results."""
    settings: dict[str, Any] = {**WARM_START, "steps": 4}
    return warm_start(path, **settings)
