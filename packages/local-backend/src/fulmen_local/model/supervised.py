"""The supervised loop every warm start shares: AdamW, warm-up then cosine decay, clipping.

A task's warm start decides *what* the model sees (its demonstrations, the curriculum, the
bad ones) through a ``next_batch(step)`` callback; :func:`train_on_demos` decides *how* it
learns from them, the same way for every task, so that the examples' base models differ only
in their data.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from fulmen_local.model.build import count_parameters, save_model

__all__ = [
    "WeightedTokens",
    "collate_demos",
    "lr_factor",
    "save_warm_start",
    "shared_prefix_length",
    "shared_prefix_lm_loss",
    "train_on_demos",
    "weighted_lm_loss",
]


class WeightedTokens(Protocol):
    """A demonstration as the warm start trains on it (any task's demo type fits)."""

    @property
    def input_ids(self) -> list[int]: ...

    @property
    def weights(self) -> list[float]: ...


def collate_demos(
    demos: Sequence[WeightedTokens], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ``(input_ids, attention_mask, weights)`` of ``demos``."""
    width = max(len(d.input_ids) for d in demos)
    input_ids = torch.full((len(demos), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(demos), width), dtype=torch.long)
    weights = torch.zeros((len(demos), width), dtype=torch.float32)
    for i, demo in enumerate(demos):
        n = len(demo.input_ids)
        input_ids[i, :n] = torch.tensor(demo.input_ids, dtype=torch.long)
        attention[i, :n] = 1
        weights[i, :n] = torch.tensor(demo.weights, dtype=torch.float32)
    return input_ids, attention, weights


def _weighted_ce(logits: torch.Tensor, input_ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    logits = logits[:, :-1, :].float()
    targets = input_ids[:, 1:]
    ce = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
    ).view_as(targets)
    w = weights[:, 1:]
    return (ce * w).sum() / w.sum().clamp(min=1e-6)


def weighted_lm_loss(
    model: torch.nn.Module, input_ids: torch.Tensor, attention: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Next-token cross-entropy weighted per target token (``weights`` aligned with
    ``input_ids``), normalised by the total weight."""
    logits = model(input_ids=input_ids, attention_mask=attention).logits
    return _weighted_ce(logits, input_ids, weights)


def shared_prefix_length(input_ids: torch.Tensor, attention: torch.Tensor) -> int:
    """How many leading tokens every row of a right-padded batch shares, capped so that each
    row keeps at least one token of its own."""
    same = (input_ids == input_ids[:1]).all(dim=0)
    differ = (~same).nonzero()
    shared = int(differ[0, 0]) if len(differ) else input_ids.shape[1]
    return min(shared, int(attention.sum(dim=1).min()) - 1)


def shared_prefix_lm_loss(
    model: torch.nn.Module, input_ids: torch.Tensor, attention: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """:func:`weighted_lm_loss` (the same value and gradient up to rounding) computed with the
    prefix every row shares run once.

    Demonstrations of one agent start with the same system prompt and tool schemas, often most
    of their tokens. The shared prefix runs through the model for one row; its key/value cache
    is repeated across the batch (``Cache.batch_repeat_interleave``, which gradients flow back
    through) and the rows' own tokens run on top of it. The model must accept
    ``past_key_values`` and ``use_cache`` (Hugging Face causal LMs do). Falls back to
    :func:`weighted_lm_loss` when the rows share fewer than two tokens or the batch has one row.
    """
    rows = input_ids.shape[0]
    shared = shared_prefix_length(input_ids, attention)
    if rows < 2 or shared < 2:
        return weighted_lm_loss(model, input_ids, attention, weights)
    head = model(input_ids=input_ids[:1, :shared], use_cache=True)
    cache = head.past_key_values
    cache.batch_repeat_interleave(rows)
    tail = model(
        input_ids=input_ids[:, shared:], attention_mask=attention, past_key_values=cache,
        use_cache=True,
    )
    logits = torch.cat([head.logits.expand(rows, -1, -1), tail.logits], dim=1)
    return _weighted_ce(logits, input_ids, weights)


def lr_factor(step: int, steps: int) -> float:
    """The learning-rate multiplier at ``step`` of ``steps``: linear warm-up over the first 5%
    of the steps (at least one), then cosine decay from 1 to 0.1."""
    warmup = max(1, steps // 20)
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def train_on_demos(
    model: torch.nn.Module,
    next_batch: Callable[[int], Sequence[WeightedTokens]],
    *,
    steps: int,
    lr: float,
    pad_id: int,
    clock_start: float | None = None,
    time_budget_s: float | None = None,
    shared_prefix: bool = False,
    log: Callable[[str], None] | None = None,
) -> list[float]:
    """Train ``model`` in place on ``steps`` batches of weighted demonstrations.

    Each step asks ``next_batch(step)`` for its demonstrations (the caller's curriculum and
    random order; it is called exactly once per step, in order), pads them with ``pad_id``,
    moves them to the model's device, takes :func:`weighted_lm_loss`
    (:func:`shared_prefix_lm_loss` with ``shared_prefix``: the same loss, cheaper when the
    demonstrations share a long prompt), clips the gradient norm to 1.0 and steps AdamW (betas
    0.9/0.98, weight decay 0.01) at ``lr`` × :func:`lr_factor`. The model is left in train mode;
    the caller switches it to eval and saves it.

    Args:
        model: a causal LM (``model(input_ids=..., attention_mask=...).logits``).
        next_batch: the demonstrations of a step.
        steps: steps planned (the schedule spans them).
        lr: peak learning rate.
        pad_id: the tokenizer's pad id.
        clock_start: ``time.perf_counter()`` the logged seconds count from (default: now).
        time_budget_s: stop after the step at which this much time since ``clock_start`` has
            passed (None: always run ``steps``).
        shared_prefix: run the tokens every demonstration of a step shares once.
        log: progress printer, every 50 steps and at the last (None: silent).

    Returns:
        The loss of every step run (fewer than ``steps`` only when the time budget ran out).

    Raises:
        ValueError: ``steps < 1`` or ``lr <= 0``.
    """
    if steps < 1 or lr <= 0:
        raise ValueError(f"need steps >= 1 and lr > 0; got steps={steps}, lr={lr}")
    began = time.perf_counter() if clock_start is None else clock_start
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, steps))
    loss_of = shared_prefix_lm_loss if shared_prefix else weighted_lm_loss
    device = next(model.parameters()).device
    losses: list[float] = []
    for step in range(steps):
        batch = [t.to(device) for t in collate_demos(next_batch(step), pad_id)]
        loss = loss_of(model, *batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        elapsed = time.perf_counter() - began
        if log is not None and (step % 50 == 0 or step == steps - 1):
            log(f"warm start step {step:4d}  loss {losses[-1]:.4f}  {elapsed:6.1f}s")
        if time_budget_s is not None and elapsed >= time_budget_s:
            break
    return losses


def save_warm_start(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: str | Path,
    settings: Mapping[str, Any],
    losses: Sequence[float],
    *,
    clocks: Mapping[str, float],
    log: Callable[[str], None] | None = None,
) -> Path:
    """Save a warm-started model and its ``warmstart.json`` record; returns the directory.

    The model is switched to eval mode and saved with its tokenizer (``save_model``). The
    record is ``settings``, then ``parameters`` and ``final_loss`` (the mean of the last ten
    losses), then one entry per ``clocks`` item: the seconds from that ``time.perf_counter()``
    start to now (after the save), rounded to 0.01. ``log`` gets the record as one line.
    """
    model.eval()
    directory = save_model(model, tokenizer, out_dir)
    tail = list(losses[-10:])
    info: dict[str, Any] = {
        **settings,
        "parameters": count_parameters(model),
        "final_loss": round(sum(tail) / len(tail), 4),
    }
    now = time.perf_counter()
    info.update({name: round(now - start, 2) for name, start in clocks.items()})
    (directory / "warmstart.json").write_text(json.dumps(info, indent=2) + "\n")
    if log is not None:
        log(f"warm start done: {json.dumps(info)}")
    return directory
