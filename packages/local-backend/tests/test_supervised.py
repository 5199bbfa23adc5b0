"""The warm starts' shared supervised loop (``fulmen_local.model.supervised``)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import torch
from fulmen_local.model.build import build_tiny_model, count_parameters
from fulmen_local.model.supervised import (
    collate_demos,
    lr_factor,
    save_warm_start,
    shared_prefix_length,
    shared_prefix_lm_loss,
    train_on_demos,
    weighted_lm_loss,
)
from fulmen_local.model.tokenizer import build_tokenizer


@dataclass(frozen=True)
class _Demo:
    input_ids: list[int]
    weights: list[float]


def test_schedule_warms_up_then_decays_to_a_tenth() -> None:
    steps = 200
    factors = [lr_factor(s, steps) for s in range(steps)]
    assert factors[0] == pytest.approx(0.1)  # 1 / warm-up of 10 steps
    assert factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in pairwise(factors[9:]))
    assert factors[-1] == pytest.approx(0.1, abs=1e-3)
    assert lr_factor(0, 1) == 1.0


def test_each_step_asks_once_in_order_and_the_loss_falls() -> None:
    torch.manual_seed(0)
    tokenizer = build_tokenizer()
    model = build_tiny_model(tokenizer, seed=0, preset="tiny")
    ids = tokenizer.encode("The answer is 42.")
    demo = _Demo(ids, [0.0] * 4 + [1.0] * (len(ids) - 4))
    asked: list[int] = []

    def next_batch(step: int) -> list[_Demo]:
        asked.append(step)
        return [demo, demo]

    pad = tokenizer.pad_token_id
    assert isinstance(pad, int)
    losses = train_on_demos(model, next_batch, steps=30, lr=3e-3, pad_id=pad)
    assert asked == list(range(30))
    assert len(losses) == 30
    assert losses[-1] < 0.5 * losses[0]


def test_time_budget_stops_early_and_bad_settings_are_refused() -> None:
    tokenizer = build_tokenizer()
    model = build_tiny_model(tokenizer, seed=0, preset="tiny")
    demo = _Demo(tokenizer.encode("hi"), [1.0, 1.0])
    pad = tokenizer.pad_token_id
    assert isinstance(pad, int)
    losses = train_on_demos(model, lambda s: [demo], steps=50, lr=1e-3, pad_id=pad, time_budget_s=0.0)
    assert len(losses) == 1
    with pytest.raises(ValueError, match="steps >= 1"):
        train_on_demos(model, lambda s: [demo], steps=0, lr=1e-3, pad_id=pad)


def test_save_warm_start_writes_the_record_after_the_settings(tmp_path: Path) -> None:
    tokenizer = build_tokenizer()
    model = build_tiny_model(tokenizer, seed=0, preset="tiny")
    started = time.perf_counter() - 5.0
    out = save_warm_start(
        model, tokenizer, tmp_path / "m", {"seed": 3}, [4.0] * 5 + [1.0] * 10,
        clocks={"seconds": started},
    )
    info = json.loads((out / "warmstart.json").read_text())
    assert list(info) == ["seed", "parameters", "final_loss", "seconds"]
    assert info["seed"] == 3 and info["final_loss"] == 1.0
    assert info["parameters"] == count_parameters(model)
    assert info["seconds"] >= 5.0
    assert not model.training
    assert any(out.glob("*.safetensors"))


def test_shared_prefix_loss_is_the_plain_loss_run_cheaper() -> None:
    """The prefix every row shares runs once; loss and gradient equal the plain loss's."""
    tokenizer = build_tokenizer()
    model = build_tiny_model(tokenizer, seed=0, preset="test").train()
    prompt = "<|im_start|>system\nUse the calculator.<|im_end|>\n<|im_start|>user\nWhat is "
    texts = ["12*3?<|im_end|>\nThe answer is 36.", "7+8?<|im_end|>\nIt is 15.", "1?<|im_end|>\n1"]
    demos = []
    for text in texts:
        ids = tokenizer.encode(prompt + text)
        weights = [0.5] * 3 + [0.0] * (len(ids) - 3 - 8) + [1.0] * 4 + [3.0] * 4
        demos.append(_Demo(ids, weights))
    pad = tokenizer.pad_token_id
    assert isinstance(pad, int)
    batch = collate_demos(demos, pad)
    assert shared_prefix_length(batch[0], batch[1]) == len(tokenizer.encode(prompt))

    def loss_and_grad(fn: Any) -> tuple[torch.Tensor, torch.Tensor]:
        model.zero_grad()
        loss = fn(model, *batch)
        loss.backward()
        return loss.detach(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    plain, plain_grad = loss_and_grad(weighted_lm_loss)
    shared, shared_grad = loss_and_grad(shared_prefix_lm_loss)
    torch.testing.assert_close(shared, plain, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(shared_grad, plain_grad, rtol=1e-4, atol=1e-6)
    # Rows sharing nothing (or one row) fall back to the plain loss.
    lone = tokenizer.encode("x" + texts[1])
    other = collate_demos([demos[0], _Demo(lone, [1.0] * len(lone))], pad)
    assert shared_prefix_length(other[0], other[1]) == 0
    torch.testing.assert_close(shared_prefix_lm_loss(model, *other), weighted_lm_loss(model, *other))


def test_a_shared_prefix_never_takes_a_whole_row() -> None:
    ids = torch.tensor([[5, 6, 7, 0], [5, 6, 7, 8]])
    attention = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    assert shared_prefix_length(ids, attention) == 2
