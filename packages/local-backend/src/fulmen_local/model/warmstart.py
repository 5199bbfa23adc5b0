"""Supervised warm start of a model on calculator demonstrations.

The model is fulmen's tiny character-level Llama by default, or any causal LM whose tokenizer
has a chat template (``warm_start(model=..., tokenizer=...)``). A randomly initialised model
knows nothing, so RL has no signal. The warm start teaches the chat format and the tool on
demonstrations rendered through the chat template exactly as the agent's conversations look::

    system, user "What is 37*48?" -> assistant <tool_call>...</tool_call> -> tool "1776"
    -> assistant "The answer is 1776."

Bad demonstrations skip the tool and state a wrong guess with as many digits as the answer. They
appear only in the last ``guess_phase`` of the steps, at ``bad_fraction``: the resulting model
calls the tool only part of the time, so greedy decoding mostly guesses (held-out success near 0)
while sampling succeeds often enough (10-40%) for GRPO to learn to use the tool.

Loss is on assistant tokens only, end tokens included (:mod:`fulmen_local.model.chat_mask`:
the template's ``{% generation %}`` blocks, or prefix renders for templates without them); the
tokens holding the characters the assistant copies from its context (the expression into the
tool call, the tool's result into the answer) weigh ``copy_weight``. Measured on 2 CPU threads:
without the weight the 0.65 M model learns the boilerplate and stalls before it learns to copy
(0% after 600 steps); with weight 10, batch 8 and lr 1e-3 it copies reliably after ~450 steps.

Reproducible: a fixed seed and thread count give the same weights. ``time_budget_s`` stops early
(and then depends on machine speed); ``steps`` alone is deterministic.

CLI: ``python -m fulmen_local.model.warmstart OUT_DIR [--steps N] [--bad-fraction F] [--eval]``
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from fulmen_local.model.build import PresetName, build_tiny_model
from fulmen_local.model.chat_mask import encode_chat_tokens
from fulmen_local.model.supervised import (
    WeightedTokens,
    collate_demos,
    save_warm_start,
    train_on_demos,
    weighted_lm_loss,
)
from fulmen_local.model.tokenizer import build_tokenizer
from fulmen_local.tasks.calculator import (
    CALCULATOR_TOOL,
    SYSTEM_PROMPT,
    Problem,
    generate_problems,
    make_splits,
)

__all__ = [
    "Demo",
    "WeightedTokens",
    "collate_demos",
    "main",
    "make_demos",
    "render_demo",
    "warm_start",
    "weighted_lm_loss",
]

@dataclass(frozen=True, slots=True)
class Demo:
    """One rendered demonstration."""

    input_ids: list[int]
    weights: list[float]
    """Loss weight of each token: 0 outside assistant turns, 1 on assistant tokens,
    ``copy_weight`` on the characters the assistant copies from its context (the expression in
    the tool call and the number in the final answer of a good demonstration)."""
    uses_tool: bool


def _wrong_guess(answer: int, rng: random.Random) -> int:
    digits = len(str(abs(answer)))
    low, high = (10 ** (digits - 1) if digits > 1 else 0), 10**digits - 1
    while True:
        guess = rng.randint(low, high) * (-1 if answer < 0 else 1)
        if guess != answer:
            return guess


def render_demo(
    tokenizer: PreTrainedTokenizerBase,
    problem: Problem,
    *,
    guess: int | None = None,
    copy_weight: float = 1.0,
    end_of_turn: str | None = None,
) -> Demo:
    """Render one demonstration through the chat template, as the agent's conversation.

    Works with any tokenizer that has a chat template (see
    :func:`fulmen_local.model.chat_mask.encode_chat_tokens`); the copied text is found by its
    character position in the rendered conversation, so byte-level BPE, whose tokens for a
    string depend on its neighbours, weighs the same characters as the character tokenizer.

    Args:
        problem: the problem demonstrated.
        guess: None for the good demonstration (tool call, tool result, answer); otherwise the
            number the assistant states directly, without calling the tool.
        copy_weight: loss weight of the tokens holding the copied characters of a good
            demonstration (see :class:`Demo`); 1 weighs every assistant token the same.
        end_of_turn: the template's end-of-turn token when it is not the tokenizer's EOS
            (templates without ``{% generation %}`` blocks only).

    Raises:
        fulmen_local.model.chat_mask.ChatMaskError: the template's assistant tokens cannot be
            found (not prefix-stable).
    """
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": problem["question"]},
    ]
    answer = str(problem["answer"])
    if guess is None:
        arguments = json.dumps({"expression": problem["expression"]})
        call = {"id": "call_0", "type": "function", "function": {"name": "calculator", "arguments": arguments}}
        messages += [
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_0", "content": answer},
            {"role": "assistant", "content": f"The answer is {answer}."},
        ]
    else:
        messages.append({"role": "assistant", "content": f"The answer is {guess}."})
    chat = encode_chat_tokens(tokenizer, messages, tools=[CALCULATOR_TOOL], end_of_turn=end_of_turn)
    weights = [float(m) for m in chat.mask]
    if guess is None and copy_weight != 1.0:
        # The copied characters and the one that ends them (closing quote, final period), each
        # the last occurrence before the previous one.
        end = len(chat.text)
        for text in (answer + ".", problem["expression"] + '"'):
            start = chat.text.rfind(text, 0, end)
            if start < 0:
                raise ValueError(f"copied text {text!r} not found in the rendered demonstration")
            for k in chat.tokens_in(start, start + len(text)):
                if chat.mask[k]:
                    weights[k] = copy_weight
            end = start
    return Demo(input_ids=chat.input_ids, weights=weights, uses_tool=guess is None)


def make_demos(
    tokenizer: PreTrainedTokenizerBase,
    *,
    count: int,
    seed: int,
    bad_fraction: float,
    exclude: set[str],
    copy_weight: float = 1.0,
    end_of_turn: str | None = None,
) -> list[Demo]:
    """Render ``count`` demonstrations of fresh problems (none in ``exclude``) with
    :func:`render_demo`.

    Exactly ``round(count * bad_fraction)`` of them are guesses, shuffled among the good ones.
    """
    if not 0.0 <= bad_fraction <= 1.0:
        raise ValueError(f"bad_fraction must be in [0, 1], got {bad_fraction}")
    rng = random.Random(seed)
    problems = generate_problems(count, seed=seed + 7919, prefix="demo", exclude=exclude)
    n_bad = round(count * bad_fraction)
    flags = [True] * n_bad + [False] * (count - n_bad)
    rng.shuffle(flags)
    return [
        render_demo(
            tokenizer,
            p,
            guess=_wrong_guess(p["answer"], rng) if bad else None,
            copy_weight=copy_weight,
            end_of_turn=end_of_turn,
        )
        for p, bad in zip(problems, flags, strict=True)
    ]


def warm_start(
    out_dir: str | Path,
    *,
    model: PreTrainedModel | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    seed: int = 0,
    steps: int = 700,
    time_budget_s: float | None = None,
    bad_fraction: float = 0.65,
    guess_phase: float = 0.25,
    copy_weight: float = 10.0,
    batch_size: int = 8,
    lr: float = 1e-3,
    num_demos: int = 6000,
    preset: PresetName = "tiny",
    end_of_turn: str | None = None,
    shared_prefix: bool = False,
    split_seed: int = 0,
    n_eval: int = 100,
    threads: int = 2,
    log: Callable[[str], None] | None = print,
) -> Path:
    """Train a model on calculator demonstrations and save it (model + tokenizer) to ``out_dir``.

    The model trained is ``model`` with its ``tokenizer`` (any causal LM whose tokenizer has a
    chat template, e.g. a random model of a real family from
    :func:`fulmen_local.families.build_family_model`), trained in place; without them, a fresh
    tiny character-level Llama of ``preset`` (:func:`~fulmen_local.model.build.build_tiny_model`,
    seeded with ``seed``) and :func:`~fulmen_local.model.tokenizer.build_tokenizer`.

    Curriculum: the first ``1 - guess_phase`` of the steps see good demonstrations only (the
    model learns the format and to copy the expression and the tool's result); the last
    ``guess_phase`` see a mix in which ``bad_fraction`` guess without the tool, which sets how
    often the finished model calls the tool. Copied characters weigh ``copy_weight`` in the
    loss (without this the tiny model learns the boilerplate and stalls before it learns to
    copy). AdamW, linear warm-up over 5% of the steps, cosine decay to 10% of ``lr``.

    Demonstrations never use an expression of the held-out split ``make_splits(seed=split_seed,
    n_eval=n_eval)``. A ``warmstart.json`` next to the weights records settings, loss and time
    (``preset`` for the built tiny model, else ``model_type``).

    Args:
        out_dir: output directory (created).
        model, tokenizer: the model to start from and its tokenizer (both or neither).
        seed: seeds the built model's init, demonstrations and batch order.
        steps: optimizer steps (the schedule is planned over them).
        time_budget_s: stop once this much training time has passed (then the result depends
            on machine speed; None always runs ``steps``).
        bad_fraction: fraction of guessing demonstrations in the final phase.
        guess_phase: fraction of the steps (at the end) that include guessing demonstrations.
        copy_weight: loss weight of copied characters (1 for a plain assistant-token mean).
        batch_size: demonstrations per step.
        lr: peak learning rate.
        num_demos: demonstrations rendered (two thirds for the first phase), each a distinct
            problem.
        preset: the tiny model's preset when ``model`` is None (see
            :mod:`fulmen_local.model.build`).
        end_of_turn: the template's end-of-turn token when it is not the tokenizer's EOS (see
            :func:`render_demo`).
        shared_prefix: run the prompt that a step's demonstrations share once per step (same
            loss up to rounding, about 2.5x faster when the system prompt and tool schemas are
            most of each demonstration; see
            :func:`~fulmen_local.model.supervised.shared_prefix_lm_loss`).
        split_seed, n_eval: the held-out split kept out of the demonstrations.
        threads: torch CPU threads while the warm start runs (the previous count is restored).
            On a busy machine one thread can cost far less CPU time per step than two.
        log: progress printer (None for silence).

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: a setting out of range, or only one of ``model`` and ``tokenizer``.
        fulmen_local.model.chat_mask.ChatMaskError: the tokenizer's template does not let the
            assistant tokens be found.
    """
    if steps < 1 or batch_size < 1 or num_demos < 2 * batch_size:
        raise ValueError(
            f"need steps >= 1 and num_demos >= 2 * batch_size >= 2; got steps={steps}, "
            f"batch_size={batch_size}, num_demos={num_demos}"
        )
    if not 0.0 <= guess_phase <= 1.0 or copy_weight <= 0 or lr <= 0:
        raise ValueError(
            f"need 0 <= guess_phase <= 1, copy_weight > 0 and lr > 0; got {guess_phase}, "
            f"{copy_weight}, {lr}"
        )
    if (model is None) != (tokenizer is None):
        raise ValueError("pass both model and tokenizer (the model to start from), or neither")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _warm_start(
            out_dir, model=model, tokenizer=tokenizer, seed=seed, steps=steps,
            time_budget_s=time_budget_s, bad_fraction=bad_fraction, guess_phase=guess_phase,
            copy_weight=copy_weight, batch_size=batch_size, lr=lr, num_demos=num_demos,
            preset=preset, end_of_turn=end_of_turn, shared_prefix=shared_prefix,
            split_seed=split_seed, n_eval=n_eval, log=log,
        )
    finally:
        torch.set_num_threads(previous_threads)


def _warm_start(
    out_dir: str | Path,
    *,
    model: PreTrainedModel | None,
    tokenizer: PreTrainedTokenizerBase | None,
    seed: int,
    steps: int,
    time_budget_s: float | None,
    bad_fraction: float,
    guess_phase: float,
    copy_weight: float,
    batch_size: int,
    lr: float,
    num_demos: int,
    preset: PresetName,
    end_of_turn: str | None,
    shared_prefix: bool,
    split_seed: int,
    n_eval: int,
    log: Callable[[str], None] | None,
) -> Path:
    started = time.perf_counter()
    torch.manual_seed(seed)
    tok = tokenizer if tokenizer is not None else build_tokenizer()
    _, held_out = make_splits(seed=split_seed, n_eval=n_eval)
    exclude = {p["expression"] for p in held_out}
    n_first = num_demos * 2 // 3
    pools = [
        make_demos(tok, count=n_first, seed=seed, bad_fraction=0.0, exclude=exclude,
                   copy_weight=copy_weight, end_of_turn=end_of_turn),
        make_demos(tok, count=num_demos - n_first, seed=seed + 1, bad_fraction=bad_fraction,
                   exclude=exclude, copy_weight=copy_weight, end_of_turn=end_of_turn),
    ]
    switch = round(steps * (1.0 - guess_phase))
    if model is None:
        net: PreTrainedModel = build_tiny_model(tok, seed=seed, preset=preset)
        origin: dict[str, Any] = {"preset": preset}
    else:
        net = model
        origin = {"model_type": str(getattr(model.config, "model_type", type(model).__name__))}
    pad_id = tok.pad_token_id
    if not isinstance(pad_id, int):
        raise ValueError("the tokenizer needs a pad token (tokenizer.pad_token = ...)")
    rng = random.Random(seed + 1)
    orders: list[list[int]] = [[], []]

    def next_batch(step: int) -> list[Demo]:
        """Good demonstrations before ``switch``, then the mixed pool; each pool is walked
        in a fresh random order, epoch after epoch."""
        phase = 0 if step < switch else 1
        pool, order = pools[phase], orders[phase]
        if len(order) < batch_size:
            fresh = list(range(len(pool)))
            rng.shuffle(fresh)
            order += fresh
        batch = [pool[i] for i in order[:batch_size]]
        del order[:batch_size]
        return batch

    train_started = time.perf_counter()
    losses = train_on_demos(
        net, next_batch, steps=steps, lr=lr, pad_id=pad_id, clock_start=train_started,
        time_budget_s=time_budget_s, shared_prefix=shared_prefix, log=log,
    )
    settings = {
        "seed": seed,
        "steps_run": len(losses),
        "steps_planned": steps,
        "bad_fraction": bad_fraction,
        "guess_phase": guess_phase,
        "copy_weight": copy_weight,
        "batch_size": batch_size,
        "lr": lr,
        "num_demos": num_demos,
        **origin,
        **({"shared_prefix": True} if shared_prefix else {}),
    }
    return save_warm_start(
        net, tok, out_dir, settings, losses,
        clocks={"train_seconds": train_started, "total_seconds": started}, log=log,
    )


def main(argv: list[str] | None = None) -> None:
    """CLI entry point; ``--help`` lists the options."""
    parser = argparse.ArgumentParser(
        prog="python -m fulmen_local.model.warmstart",
        description="Warm-start the tiny calculator model on demonstrations and save it.",
    )
    parser.add_argument("out_dir", type=Path, help="directory to write the model into")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=700)
    parser.add_argument("--time-budget", type=float, default=None, help="seconds (optional)")
    parser.add_argument("--bad-fraction", type=float, default=0.65)
    parser.add_argument("--guess-phase", type=float, default=0.25)
    parser.add_argument("--copy-weight", type=float, default=10.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--num-demos", type=int, default=6000)
    parser.add_argument("--preset", choices=["test", "tiny", "small"], default="tiny")
    parser.add_argument("--eval", action="store_true", help="report held-out success at the end")
    args = parser.parse_args(argv)
    out = warm_start(
        args.out_dir,
        seed=args.seed,
        steps=args.steps,
        time_budget_s=args.time_budget,
        bad_fraction=args.bad_fraction,
        guess_phase=args.guess_phase,
        copy_weight=args.copy_weight,
        batch_size=args.batch_size,
        lr=args.lr,
        num_demos=args.num_demos,
        preset=args.preset,
    )
    if args.eval:
        from fulmen_local.model.build import load_model
        from fulmen_local.tasks.calculator_rollout import success_rate

        model, tokenizer = load_model(out)
        _, held_out = make_splits(seed=0, n_eval=100)
        greedy = success_rate(model, tokenizer, held_out, temperature=0.0)
        sampled = success_rate(model, tokenizer, held_out, temperature=1.0, samples=4)
        print(f"held-out success: greedy {greedy:.0%}, sampled (T=1, 4 per problem) {sampled:.0%}")


if __name__ == "__main__":
    main()
