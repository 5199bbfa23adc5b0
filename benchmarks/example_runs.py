"""Full CPU training runs of the examples, with their held-out results, in one table.

Each named example's ``train.toml`` is trained from a fresh run directory with the real
``fulmen train`` command (a subprocess, exactly as a user runs it); the script then reads the
run's ``metrics.jsonl`` and prints one Markdown row per example: held-out success (greedy) at
every eval, wall time, mean step time and the machine's load average. These are the "full CPU
runs" of issue #6; CI runs only the examples' 2-step smoke configs.

    uv run --locked python benchmarks/example_runs.py                      # every example
    uv run --locked python benchmarks/example_runs.py autogen_calculator   # one
    uv run --locked python benchmarks/example_runs.py --rebuild-base rag   # warm start too

The run directory of each example (``[run] output_dir``) is deleted first; its base model
(``[model] path``) is kept unless ``--rebuild-base``, so by default the wall time is the RL run
only (plus the base eval).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fulmen.config import load_config

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True, slots=True)
class RunResult:
    """What one example's full run measured."""

    example: str
    held_out: list[tuple[int, float]]
    """(step, greedy held-out success) for every eval of the run, step 0 = the base model."""
    wall_s: float
    mean_step_s: float
    steps: int
    base_rebuilt: bool
    load_before: float
    load_after: float


def examples() -> list[str]:
    """Every example with a ``train.toml`` (its folder name)."""
    return sorted(p.parent.name for p in (ROOT / "examples").glob("*/train.toml"))


def run_example(name: str, *, rebuild_base: bool) -> RunResult:
    """Train ``examples/<name>/train.toml`` from a fresh run directory; its figures."""
    config_path = ROOT / "examples" / name / "train.toml"
    if not config_path.is_file():
        raise SystemExit(f"no examples/{name}/train.toml; choose from {', '.join(examples())}")
    config = load_config(config_path, base_dir=ROOT)
    out_dir = config.resolve(config.run.output_dir)
    shutil.rmtree(out_dir, ignore_errors=True)
    model_dir = config.resolve(config.model.path)
    if rebuild_base:
        shutil.rmtree(model_dir, ignore_errors=True)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "fulmen.cli", "train", str(config_path)], cwd=ROOT, check=False
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{name}: fulmen train exited {done.returncode}")
    rows = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [(int(r["step"]), float(r["success_rate"])) for r in rows if r.get("kind") == "eval"]
    steps = [float(r["step_s"]) for r in rows if r.get("kind") == "train" and "step_s" in r]
    return RunResult(
        example=name,
        held_out=evals,
        wall_s=round(wall, 1),
        mean_step_s=round(sum(steps) / max(len(steps), 1), 2),
        steps=len(steps),
        base_rebuilt=rebuild_base,
        load_before=round(load_before, 2),
        load_after=round(os.getloadavg()[0], 2),
    )


def markdown(results: list[RunResult]) -> str:
    """The results as the table of benchmarks/README.md."""
    lines = [
        "| example | held-out success by step (greedy) | steps | mean step s | wall s | load 1-min before → after |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        curve = " → ".join(f"{s}: {v:.1%}" for s, v in r.held_out)
        wall = f"{r.wall_s}" + (" (warm start included)" if r.base_rebuilt else "")
        lines.append(
            f"| {r.example} | {curve} | {r.steps} | {r.mean_step_s} | {wall} | "
            f"{r.load_before} → {r.load_after} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen examples one after another; print the table (and write ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"examples (default: all of {examples()})")
    parser.add_argument("--rebuild-base", action="store_true", help="delete and rebuild base models")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    results = [run_example(n, rebuild_base=args.rebuild_base) for n in args.names or examples()]
    print(markdown(results))
    if args.json is not None:
        payload: list[dict[str, Any]] = [asdict(r) for r in results]
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
