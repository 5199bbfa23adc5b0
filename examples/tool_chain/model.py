"""Builds the tool-chain example's base model: fulmen's tiny character-level Llama, warm-started
for 1,200 steps on correct demonstrations of **chains of 1 and 2 keys only**, three in four of
them a single key (:mod:`fulmen_tasks.chain_demos`). Nothing wrong is demonstrated; the base is
weak because every further key must be copied from a tool result (``see m3x``), which few
demonstrations show, and a chain fails when any of its calls miscopies one. Measured on this
base (sampled at temperature 1, 64 episodes per step): 57 % of 2-key, 31 % of 3-key and 15 % of
4-key training chains succeed; greedy on the held-out chains of 3 and 4 keys, 36 %. Bitwise
deterministic from the seed on one machine (two builds compared). ``fulmen train`` calls
:func:`build` when ``[model] path`` holds no model yet.

By hand::

    uv run --locked python -m examples.tool_chain.model runs/tool-chain-base
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fulmen_local.model.warmstart import warm_start
from fulmen_tasks.chain_demos import DEMO_LENGTHS, demonstrations

__all__ = ["WARM_START", "build", "build_smoke", "chain_warm_start", "main"]

WARM_START: dict[str, Any] = {
    "seed": 0, "steps": 1200, "num_demos": 12000, "batch_size": 8, "lr": 1e-3, "threads": 1,
}
"""Warm-start settings (see :func:`chain_warm_start`)."""


def chain_warm_start(path: str | Path, *, seed: int, num_demos: int, **options: Any) -> Path:
    """Warm-start a model into ``path`` on ``num_demos`` demonstrations of 1-2 key chains
    (none a held-out question). ``options`` go to
    :func:`fulmen_local.model.warmstart.warm_start` (``steps``, ``batch_size``, ``lr``...);
    ``seed`` seeds the demonstrations and the training."""
    return warm_start(
        path, demonstrations(num_demos, seed=seed), seed=seed, shared_prefix=True,
        record={"task": "tool_chain", "demo_lengths": list(DEMO_LENGTHS), "num_demos": num_demos},
        **options,
    )


def build(path: Path) -> Path:
    """Warm-start the base model into ``path``."""
    return chain_warm_start(path, **WARM_START)


def build_smoke(path: Path) -> Path:
    """A few warm-start steps only: for smoke tests of the training loop, not for results."""
    return chain_warm_start(path, **{**WARM_START, "steps": 5, "num_demos": 64})


def main(argv: list[str] | None = None) -> None:
    """CLI entry point; ``--help`` lists the options."""
    parser = argparse.ArgumentParser(
        prog="python -m examples.tool_chain.model",
        description="Warm-start the tiny model on 1-2 key tool chains and save it.",
    )
    parser.add_argument("out_dir", type=Path, help="directory to write the model into")
    parser.add_argument("--seed", type=int, default=WARM_START["seed"])
    parser.add_argument("--steps", type=int, default=WARM_START["steps"])
    args = parser.parse_args(argv)
    chain_warm_start(args.out_dir, **{**WARM_START, "seed": args.seed, "steps": args.steps})


if __name__ == "__main__":
    main()
