"""The warm starts' shared supervised loop (``fulmen_local.model.supervised``)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import pytest
import torch
from fulmen_local.model.build import build_tiny_model, count_parameters
from fulmen_local.model.supervised import lr_factor, save_warm_start, train_on_demos
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
