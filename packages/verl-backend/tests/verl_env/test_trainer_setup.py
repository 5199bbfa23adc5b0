"""verl's own ``RayPPOTrainer`` dataloader on fulmen's placeholder data (issue 14, audit bug 1),
without workers: the method tested touches none. (Audit bug 2, ``--resume`` without a
checkpoint, is core's StepDriver's now: ``tests/core/train/test_step_driver.py``.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fulmen_verl.backend import prepare_job
from fulmen_verl.trainer import placeholder_dataset

ROOT = Path(__file__).resolve().parents[4]
CONFIG = ROOT / "examples" / "calculator" / "train_verl_cpu.toml"


def bare_trainer(cfg: Any) -> Any:
    """A ``RayPPOTrainer`` with only its config set (no Ray, no workers)."""
    from verl.trainer.ppo.ray_trainer import RayPPOTrainer

    trainer: Any = RayPPOTrainer.__new__(RayPPOTrainer)
    trainer.config = cfg
    return trainer


@pytest.mark.parametrize(("tasks", "group"), [(4, 4), (16, 8), (1, 1)])
def test_verl_builds_a_nonempty_dataloader_from_the_placeholder(tasks: int, group: int) -> None:
    """Bug 1: verl asserts "Train dataloader is empty!" when the placeholder holds fewer items
    than ``data.train_batch_size`` (``tasks_per_step x group_size``)."""
    from omegaconf import open_dict

    cfg = prepare_job(CONFIG).hydra
    with open_dict(cfg):
        cfg.data.train_batch_size = tasks * group
    trainer = bare_trainer(cfg)
    data = placeholder_dataset(cfg)
    trainer._create_dataloader(data, data, lambda items: items, None)
    assert len(trainer.train_dataloader) == 1
    assert len(next(iter(trainer.train_dataloader))) == tasks * group
