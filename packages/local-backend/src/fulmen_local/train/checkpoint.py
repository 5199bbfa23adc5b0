"""Checkpoints: model + tokenizer (loadable by ``from_pretrained``), optimizer, step, RNG and
data position, written atomically.

Layout under ``<output_dir>/checkpoints/``::

    step-000004/            model (safetensors) + tokenizer + trainer_state.pt
    latest                  text file naming the newest complete checkpoint

A checkpoint directory is written under a temporary name and renamed when complete, and
``latest`` is replaced atomically afterwards, so a crash mid-save leaves the previous
checkpoint as ``latest``.
"""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["Checkpoint", "latest_checkpoint", "load_trainer_state", "save_checkpoint"]

_STATE_FILE = "trainer_state.pt"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A complete checkpoint on disk."""

    path: Path
    step: int
    """Number of completed training steps."""


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


def save_checkpoint(
    root: Path,
    *,
    step: int,
    model: Any,
    tokenizer: Any,
    optimizer: torch.optim.Optimizer,
    extra: dict[str, Any],
    keep: int = 2,
) -> Checkpoint:
    """Save everything needed to resume after ``step`` completed steps; keep the newest ``keep``."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = root / f".tmp-step-{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    torch.save(
        {"step": step, "optimizer": optimizer.state_dict(), "rng": _rng_state(), "extra": extra},
        tmp / _STATE_FILE,
    )
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    latest_tmp = root / ".latest.tmp"
    latest_tmp.write_text(final.name)
    os.replace(latest_tmp, root / "latest")
    done = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return Checkpoint(path=final, step=step)


def latest_checkpoint(root: Path) -> Checkpoint | None:
    """The newest complete checkpoint under ``root``, or None."""
    pointer = root / "latest"
    if not pointer.exists():
        return None
    path = root / pointer.read_text().strip()
    if not (path / _STATE_FILE).exists():
        return None
    return Checkpoint(path=path, step=int(path.name.split("-")[1]))


def load_trainer_state(checkpoint: Checkpoint, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore optimizer and RNG state; return the ``extra`` dict saved with it."""
    state = torch.load(checkpoint.path / _STATE_FILE, weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    _set_rng_state(state["rng"])
    return dict(state["extra"])
