"""Rows whose rollout logprobs are unknown (``TrainingRow.missing_logprobs``) are trained
against the trainer's recomputed old logprobs, never against the 0.0 placeholder."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from fulmen.config import load_config
from fulmen.rows import TrainingRow
from fulmen_verl.config import VerlConfig, compose_verl_config, to_hydra_overrides
from fulmen_verl.dataproto import add_missing_logprobs, rows_to_dataproto
from fulmen_verl.step import MISSING_LOGPROBS_KEY, prepare_batch

ROOT = Path(__file__).resolve().parents[3]
RECOMPUTED = -0.5


class RecomputingTrainer:
    """Stands in for ``RayPPOTrainer``'s driver side, whose workers need verl's environment
    (``test_verl_cpu_env.py`` runs the real one): its config, and an old-logprob pass that
    answers ``RECOMPUTED`` for every token."""

    def __init__(self, cfg: Any) -> None:
        self.config = cfg
        self.use_reference_policy = False
        self.recomputed = 0

    def _balance_batch(self, batch: Any, metrics: dict[str, float]) -> None:
        return None

    def _compute_old_log_prob(self, batch: Any) -> tuple[Any, float]:
        from verl import DataProto

        self.recomputed += 1
        shape = batch.batch["responses"].shape
        old = torch.full(shape, RECOMPUTED)
        return DataProto.from_dict(tensors={"old_log_probs": old, "entropys": old}), 0.0


def row(name: str, logprobs: tuple[float, ...], missing: tuple[int, ...] = ()) -> TrainingRow:
    n = len(logprobs)
    return TrainingRow(
        prompt_ids=(1, 2),
        response_ids=tuple(range(3, 3 + n)),
        response_mask=(1,) * n,
        rollout_logprobs=logprobs,
        advantages=(1.0,) * n,
        group_id="g",
        episode_id=name,
        seqs=(0,),
        missing_logprobs=missing,
    )


@pytest.mark.parametrize("mode", ["bypass", "recompute"])
def test_unknown_rollout_logprobs_are_recomputed_not_zero(mode: str) -> None:
    config = load_config(ROOT / "examples" / "calculator" / "train_verl.toml", base_dir=ROOT)
    verl = VerlConfig(old_logprobs=mode)  # pyright: ignore[reportArgumentType]
    trainer = RecomputingTrainer(
        compose_verl_config(to_hydra_overrides(config, verl, model_path="/m"))
    )
    rows = [row("a", (-0.1, 0.0, 0.0), missing=(0, 1, 1)), row("b", (-0.2, -0.3))]
    data = rows_to_dataproto(rows, pad_token_id=0)
    add_missing_logprobs(data, rows)
    metrics: dict[str, float] = {}
    data = prepare_batch(trainer, data, metrics)
    assert MISSING_LOGPROBS_KEY not in set(data.batch.keys())
    rollout = data.batch["rollout_log_probs"]
    assert rollout[0, :3].tolist() == pytest.approx([-0.1, RECOMPUTED, RECOMPUTED])
    assert rollout[1, :2].tolist() == pytest.approx([-0.2, -0.3])
    assert metrics["verl/recomputed_old_logprob_tokens"] == 2
    # drift: the trainer's -0.5 against the server's logprobs, on the 3 tokens the server gave
    d = [RECOMPUTED - v for v in (-0.1, -0.2, -0.3)]
    assert metrics["drift/logprob_tokens"] == 3
    assert metrics["drift/logprob_abs_diff_mean"] == pytest.approx(sum(abs(x) for x in d) / 3)
    assert metrics["drift/logprob_abs_diff_max"] == pytest.approx(0.4)
    k3 = sum(math.exp(x) - x - 1 for x in d) / 3
    assert metrics["drift/logprob_k3"] == pytest.approx(k3, rel=1e-5)
    if mode == "bypass":  # the PPO ratio's denominator is the (now filled-in) rollout logprob
        assert torch.equal(data.batch["old_log_probs"], rollout)


def test_rows_with_every_logprob_known_add_nothing() -> None:
    rows = [row("a", (-0.1, -0.2))]
    data = rows_to_dataproto(rows, pad_token_id=0)
    add_missing_logprobs(data, rows)
    assert MISSING_LOGPROBS_KEY not in set(data.batch.keys())
