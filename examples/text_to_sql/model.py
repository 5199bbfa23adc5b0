"""Builds the text-to-SQL example's base model: the tiny character-level Llama of
``fulmen_local`` (``tiny`` preset, 512-token context), warm-started on SQL demonstrations.

Demonstrations are rendered through the model's chat template exactly as the agent's
conversations look::

    system SCHEMA, user "How many orders were placed in 2021?"
    -> assistant <tool_call>{"name": "execute_sql", "arguments": {"query": "SELECT ..."}}</tool_call>
    -> tool "236" -> assistant "SELECT COUNT(*) FROM orders WHERE year=2021"

Bad demonstrations answer at once, without executing, with the template's plausible mistake (a
wrong column, a flipped comparison, a bad join key). As in the calculator's warm start they
appear only in the last ``guess_phase`` of the steps, at ``bad_fraction``, so the base agent
mostly answers unchecked and wrong under greedy decoding. The slot values the assistant copies
from the question (a year, a department, a threshold) weigh ``copy_weight`` in the loss.

Measured (README): 600 steps left the model undertrained — it often picked the wrong template
and miscopied slot values, so sampled episodes succeeded only 1-5 % of the time and GRPO gained
10.8 points. 1,500 steps (the default now) give a base that succeeds 28 % of the time when
sampled but 2 % greedy, and 8 GRPO steps take it to 58 % held-out. The warm start costs about
0.6 s a step on the 2-core machine (935 s with another job on the second core).

Demonstrations use training questions only (never a held-out template instance). Deterministic
from the seed and thread count; ``fulmen train`` calls :func:`build` when ``[model] path`` holds
no model yet.
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

from examples.hub import QWEN_0_5B_INSTRUCT, download
from examples.text_to_sql.agent import EXECUTE_SQL_TOOL, SYSTEM_PROMPT
from examples.text_to_sql.make_db import ensure_db
from examples.text_to_sql.questions import Question, make_splits
from examples.text_to_sql.sql import format_result, run_query

__all__ = [
    "INSTRUCT_MODEL",
    "WARM_START",
    "SqlDemo",
    "build",
    "build_smoke",
    "download_instruct",
    "render_demo",
    "warm_start",
]

WARM_START: dict[str, Any] = {
    "seed": 0,
    "steps": 1500,
    "bad_fraction": 0.6,
    "guess_phase": 0.25,
    "batch_size": 8,
    "lr": 1e-3,
}
"""Warm-start settings of the base model (see :func:`warm_start`)."""


@dataclass(frozen=True, slots=True)
class SqlDemo:
    """One rendered demonstration."""

    input_ids: list[int]
    weights: list[float]
    """Loss weight per token: 0 outside assistant turns, 1 on assistant tokens, ``copy_weight``
    on the slot values the assistant copies from the question."""
    executes: bool
    """True for a good demonstration (executes, then answers with the gold query)."""


def render_demo(
    tokenizer: PreTrainedTokenizerBase,
    question: Question,
    *,
    result: str,
    bad: bool = False,
    copy_weight: float = 1.0,
) -> SqlDemo:
    """Render one demonstration of ``question``.

    Args:
        result: the tool's text for the gold query (good demonstrations).
        bad: answer at once with the template's plausible mistake, without executing.
        copy_weight: loss weight of the copied slot values.
    """
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": question["question"]},
    ]
    if bad:
        messages.append({"role": "assistant", "content": question["wrong"]})
    else:
        arguments = json.dumps({"query": question["gold"]})
        call = {"id": "call_0", "type": "function",
                "function": {"name": "execute_sql", "arguments": arguments}}
        messages += [
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_0", "content": result},
            {"role": "assistant", "content": question["gold"]},
        ]
    ids, mask = encode_chat_with_mask(tokenizer, messages, tools=[EXECUTE_SQL_TOOL])
    weights = [float(m) for m in mask]
    if copy_weight != 1.0:
        for value in question["values"]:
            pattern = tokenizer.encode(value, add_special_tokens=False)
            n = len(pattern)
            for start in range(len(ids) - n + 1):
                if mask[start] and ids[start : start + n] == pattern:
                    for k in range(start, start + n):
                        weights[k] = copy_weight
    return SqlDemo(input_ids=ids, weights=weights, executes=not bad)


def warm_start(
    out_dir: str | Path,
    *,
    seed: int = 0,
    steps: int = 1500,
    bad_fraction: float = 0.6,
    guess_phase: float = 0.25,
    copy_weight: float = 5.0,
    batch_size: int = 8,
    lr: float = 1e-3,
    threads: int = 2,
    log: Callable[[str], None] | None = print,
) -> Path:
    """Train a fresh ``tiny`` model on SQL demonstrations and save it to ``out_dir``.

    The first ``1 - guess_phase`` of the steps see good demonstrations only; the rest see bad
    ones at ``bad_fraction``. AdamW, linear warm-up over 5% of the steps, cosine decay to 10%
    of ``lr``. A ``warmstart.json`` next to the weights records settings, loss and time.

    Raises:
        ValueError: a setting out of range.
    """
    if steps < 1 or batch_size < 1 or lr <= 0 or copy_weight <= 0:
        raise ValueError("need steps >= 1, batch_size >= 1, lr > 0 and copy_weight > 0")
    if not 0.0 <= bad_fraction <= 1.0 or not 0.0 <= guess_phase <= 1.0:
        raise ValueError("bad_fraction and guess_phase must be in [0, 1]")
    started = time.perf_counter()
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    db = ensure_db()
    train, _ = make_splits(seed=0)
    results = {q["gold"]: format_result(run_query(db, q["gold"])) for q in train}
    good = [render_demo(tokenizer, q, result=results[q["gold"]], copy_weight=copy_weight)
            for q in train]
    bad = [render_demo(tokenizer, q, result="", bad=True, copy_weight=copy_weight) for q in train]
    longest = max(len(d.input_ids) for d in good)
    model = build_tiny_model(tokenizer, seed=seed, preset="tiny")
    if longest > model.config.max_position_embeddings:
        raise ValueError(f"a demonstration has {longest} tokens, over the model's context")
    pad_id = tokenizer.pad_token_id
    if not isinstance(pad_id, int):
        raise RuntimeError("the tokenizer has no pad token")
    rng = random.Random(seed + 1)
    switch = round(steps * (1.0 - guess_phase))

    def next_batch(step: int) -> list[SqlDemo]:
        late = step >= switch
        return [
            rng.choice(bad) if late and rng.random() < bad_fraction else rng.choice(good)
            for _ in range(batch_size)
        ]

    losses = train_on_demos(
        model, next_batch, steps=steps, lr=lr, pad_id=pad_id, clock_start=started, log=log
    )
    settings = {
        "seed": seed,
        "steps": steps,
        "bad_fraction": bad_fraction,
        "guess_phase": guess_phase,
        "copy_weight": copy_weight,
        "batch_size": batch_size,
        "lr": lr,
        "demos": len(good),
        "longest_demo_tokens": longest,
    }
    return save_warm_start(
        model, tokenizer, out_dir, settings, losses, clocks={"seconds": started}, log=log
    )


def build(path: Path) -> Path:
    """Warm-start the base model into ``path``."""
    return warm_start(path, **WARM_START)


def build_smoke(path: Path) -> Path:
    """A few warm-start steps only: for smoke tests of the training loop, not for results."""
    settings: dict[str, Any] = {**WARM_START, "steps": 5}
    return warm_start(path, **settings)


INSTRUCT_MODEL = QWEN_0_5B_INSTRUCT
"""The real small model of ``train_verl.toml`` (Hermes-style tool calls, 32k context)."""


def download_instruct(path: Path) -> Path:
    """Download :data:`INSTRUCT_MODEL` from the Hugging Face Hub into ``path`` (GPU runs)."""
    return download(INSTRUCT_MODEL, path)
