"""The trainer's state beside the weights in a checkpoint: optimizer and random state.

Saved by :meth:`LocalPolicy.save <fulmen_local.train.local_policy.LocalPolicy.save>` as
``trainer_state.pt`` next to the model (or adapter) files, restored by ``load`` so that the
next update continues exactly as the uninterrupted run's would.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fulmen.config import ConfigError

__all__ = ["STATE_FILE", "load_trainer_state", "save_trainer_state"]

STATE_FILE = "trainer_state.pt"


def _rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save_trainer_state(directory: Path, optimizer: torch.optim.Optimizer) -> None:
    """Write the optimizer's state and the random state (Python, NumPy, torch CPU)."""
    torch.save({"optimizer": optimizer.state_dict(), "rng": _rng_state()}, directory / STATE_FILE)


def load_trainer_state(directory: Path, optimizer: torch.optim.Optimizer) -> None:
    """Restore what :func:`save_trainer_state` wrote into ``directory``.

    Raises:
        ConfigError: ``directory`` has no trainer state.
    """
    path = directory / STATE_FILE
    if not path.is_file():
        raise ConfigError(f"{directory} holds no {STATE_FILE}: not a checkpoint of a fulmen-local run")
    state = torch.load(path, weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    _set_rng_state(state["rng"])
