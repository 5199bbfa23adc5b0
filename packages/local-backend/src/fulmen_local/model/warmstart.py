"""Supervised warm start of the tiny model on calculator demonstrations.

A randomly initialised model knows nothing, so RL has no signal. The warm start teaches the chat
format and the tool on demonstrations rendered through the chat template exactly as the agent's
conversations look::

    system, user "What is 37*48?" -> assistant <tool_call>...</tool_call> -> tool "1776"
    -> assistant "The answer is 1776."

A fraction ``bad_fraction`` of the demonstrations skip the tool and state a wrong guess of the
same size as the answer. The resulting model calls the tool only part of the time: greedy
decoding mostly guesses (low held-out success) while sampling succeeds often enough for GRPO to
learn to use the tool. Loss is on assistant tokens only (the template's ``{% generation %}``
blocks, end tokens included).

Reproducible: a fixed seed and thread count give the same weights. ``time_budget_s`` stops early
(and then depends on machine speed); ``steps`` alone is deterministic.

CLI: ``python -m fulmen_local.model.warmstart OUT_DIR [--steps N] [--bad-fraction F] ...``
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from fulmen_local.model.build import PresetName, build_tiny_model, count_parameters, save_model
from fulmen_local.model.tokenizer import build_tokenizer, encode_chat_with_mask
from fulmen_local.tasks.calculator import (
    CALCULATOR_TOOL,
    SYSTEM_PROMPT,
    Problem,
    generate_problems,
    make_splits,
)

__all__ = ["Demo", "make_demos", "render_demo", "warm_start"]

Demo = tuple[list[int], list[int]]
"""``(input_ids, loss_mask)`` of one rendered demonstration."""


def _wrong_guess(answer: int, rng: random.Random) -> int:
    digits = len(str(abs(answer)))
    low, high = (10 ** (digits - 1) if digits > 1 else 0), 10**digits - 1
    while True:
        guess = rng.randint(low, high) * (-1 if answer < 0 else 1)
        if guess != answer:
            return guess


def render_demo(
    tokenizer: PreTrainedTokenizerBase, problem: Problem, *, guess: int | None = None
) -> Demo:
    """Render one demonstration through the chat template.

    Args:
        problem: the problem demonstrated.
        guess: None for the good demonstration (tool call, tool result, answer); otherwise the
            number the assistant states directly without calling the tool.

    Returns:
        ``(input_ids, loss_mask)``; the mask is 1 on assistant-generated tokens.
    """
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": problem["question"]},
    ]
    if guess is None:
        arguments = json.dumps({"expression": problem["expression"]})
        call = {"id": "call_0", "type": "function", "function": {"name": "calculator", "arguments": arguments}}
        messages += [
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_0", "content": str(problem["answer"])},
            {"role": "assistant", "content": f"The answer is {problem['answer']}."},
        ]
    else:
        messages.append({"role": "assistant", "content": f"The answer is {guess}."})
    return encode_chat_with_mask(tokenizer, messages, tools=[CALCULATOR_TOOL])


def make_demos(
    tokenizer: PreTrainedTokenizerBase,
    *,
    count: int,
    seed: int,
    bad_fraction: float,
    exclude: set[str],
) -> list[Demo]:
    """Render ``count`` demonstrations of fresh problems (none in ``exclude``).

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
        render_demo(tokenizer, p, guess=_wrong_guess(p["answer"], rng) if bad else None)
        for p, bad in zip(problems, flags, strict=True)
    ]


def _collate(demos: list[Demo], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids, _ in demos)
    input_ids = torch.full((len(demos), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(demos), width), dtype=torch.long)
    labels = torch.full((len(demos), width), -100, dtype=torch.long)
    for i, (ids, mask) in enumerate(demos):
        n = len(ids)
        row = torch.tensor(ids, dtype=torch.long)
        input_ids[i, :n] = row
        attention[i, :n] = 1
        labels[i, :n] = torch.where(torch.tensor(mask, dtype=torch.bool), row, -100)
    return input_ids, attention, labels


def warm_start(
    out_dir: str | Path,
    *,
    seed: int = 0,
    steps: int = 300,
    time_budget_s: float | None = None,
    bad_fraction: float = 0.65,
    batch_size: int = 32,
    lr: float = 3e-3,
    num_demos: int = 6000,
    preset: PresetName = "tiny",
    split_seed: int = 0,
    n_eval: int = 100,
    threads: int = 2,
    log: Callable[[str], None] | None = print,
) -> Path:
    """Train a fresh tiny model on demonstrations and save it (model + tokenizer) to ``out_dir``.

    Demonstrations never use an expression of the held-out split ``make_splits(seed=split_seed,
    n_eval=n_eval)``. AdamW with linear warm-up (5% of steps) and cosine decay to 10% of
    ``lr``. A ``warmstart.json`` next to the weights records the settings, losses and time.

    Args:
        out_dir: output directory (created).
        seed: seeds model init, demonstrations and batch order.
        steps: optimizer steps (the schedule is planned over them).
        time_budget_s: stop earlier once this much training time has passed (not reproducible
            across machines; None to always run ``steps``).
        bad_fraction: fraction of demonstrations that guess instead of calling the tool.
        batch_size: demonstrations per step.
        lr: peak learning rate.
        num_demos: size of the demonstration pool (each a distinct problem).
        preset: model preset (see :mod:`fulmen_local.model.build`).
        split_seed, n_eval: the held-out split to keep out of the demonstrations.
        threads: torch CPU threads.
        log: progress printer (None for silence).

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.
    """
    if steps < 1 or batch_size < 1 or num_demos < batch_size:
        raise ValueError(
            f"need steps >= 1 and num_demos >= batch_size >= 1; got steps={steps}, "
            f"batch_size={batch_size}, num_demos={num_demos}"
        )
    started = time.perf_counter()
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    _, held_out = make_splits(seed=split_seed, n_eval=n_eval)
    demos = make_demos(
        tokenizer,
        count=num_demos,
        seed=seed,
        bad_fraction=bad_fraction,
        exclude={p["expression"] for p in held_out},
    )
    model = build_tiny_model(tokenizer, seed=seed, preset=preset)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    warmup = max(1, steps // 20)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    pad_id = tokenizer.pad_token_id
    assert isinstance(pad_id, int)
    rng = random.Random(seed + 1)
    order: list[int] = []
    losses: list[float] = []
    train_started = time.perf_counter()
    step = 0
    for step in range(steps):
        if len(order) < batch_size:
            fresh = list(range(len(demos)))
            rng.shuffle(fresh)
            order += fresh
        batch = [demos[i] for i in order[:batch_size]]
        del order[:batch_size]
        input_ids, attention, labels = _collate(batch, pad_id)
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        elapsed = time.perf_counter() - train_started
        if log is not None and (step % 25 == 0 or step == steps - 1):
            log(f"warm start step {step:4d}  loss {losses[-1]:.4f}  {elapsed:6.1f}s")
        if time_budget_s is not None and elapsed >= time_budget_s:
            break
    model.eval()
    directory = save_model(model, tokenizer, out_dir)
    info = {
        "seed": seed,
        "steps_run": step + 1,
        "steps_planned": steps,
        "bad_fraction": bad_fraction,
        "batch_size": batch_size,
        "lr": lr,
        "num_demos": num_demos,
        "preset": preset,
        "parameters": count_parameters(model),
        "final_loss": sum(losses[-10:]) / len(losses[-10:]),
        "train_seconds": round(time.perf_counter() - train_started, 2),
        "total_seconds": round(time.perf_counter() - started, 2),
    }
    (directory / "warmstart.json").write_text(json.dumps(info, indent=2) + "\n")
    if log is not None:
        log(f"warm start done: {json.dumps(info)}")
    return directory


def main(argv: list[str] | None = None) -> None:
    """CLI entry point; ``--help`` lists the options."""
    parser = argparse.ArgumentParser(
        prog="python -m fulmen_local.model.warmstart",
        description="Warm-start the tiny calculator model on demonstrations and save it.",
    )
    parser.add_argument("out_dir", type=Path, help="directory to write the model into")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--time-budget", type=float, default=None, help="seconds (optional)")
    parser.add_argument("--bad-fraction", type=float, default=0.65)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
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
