"""Builds the calculator example's base model: a tiny character-level Llama, warm-started on
calculator demonstrations of which most deliberately skip the tool and guess (so RL has
something to fix). Deterministic from the seed; ``fulmen train`` calls :func:`build` when
``[model] path`` holds no model yet."""

from __future__ import annotations

from pathlib import Path

from fulmen_local.model.warmstart import warm_start

WARM_START = {"seed": 0, "steps": 700, "bad_fraction": 0.65, "batch_size": 8, "lr": 1e-3}
"""Warm-start settings (see :func:`fulmen_local.model.warmstart.warm_start`)."""


def build(path: Path) -> Path:
    """Warm-start the base model into ``path``."""
    return warm_start(path, **WARM_START)  # type: ignore[arg-type]


def build_smoke(path: Path) -> Path:
    """A few warm-start steps only: for smoke tests of the training loop, not for results."""
    return warm_start(path, **{**WARM_START, "steps": 5, "num_demos": 64})  # type: ignore[arg-type]
