"""The calculator learning run on this CPU, verl backend beside the embedded one (issue 14).

``run`` trains one config with the real ``fulmen train`` command (a subprocess, exactly as a
user runs it, from a fresh ``[run] output_dir``) and stamps every row of its ``metrics.jsonl``
with the wall-clock seconds since the command started (so the held-out figures carry the
start-up: Ray, verl's workers and vLLM for the verl backend); it samples the 1-minute load
average every few seconds. ``report`` reads the runs' JSON files, prints the Markdown tables of
``packages/verl-backend/README.md`` (held-out success per eval, wall clock; per-step time
breakdown) and draws the curve PNG::

    # verl (its own environment: bash scripts/verl_cpu_env.sh), then the embedded twin
    .venv-verl/bin/python benchmarks/verl_cpu_learning.py run examples/calculator/train_verl_cpu.toml \\
        --fulmen .venv-verl/bin/fulmen --json runs/verl-cpu-learning/verl.json
    uv run --locked python benchmarks/verl_cpu_learning.py run \\
        examples/calculator/train_verl_cpu_embedded.toml --json runs/verl-cpu-learning/local.json
    uv run --locked python benchmarks/verl_cpu_learning.py report runs/verl-cpu-learning/verl.json \\
        runs/verl-cpu-learning/local.json --png packages/verl-backend/curve_cpu.png

The base model (``[model] path``) is kept; build it first (``fulmen train`` builds it when it
is missing, and that time would then be part of the first run's wall clock).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fulmen.config import load_config

ROOT = Path(__file__).resolve().parents[1]

STEP_COLUMNS: tuple[tuple[str, str], ...] = (
    ("rollout_s", "rollout"),
    ("verl/sleep_s", "vLLM sleep"),
    ("verl/old_logprob_s", "old-logprob"),
    ("verl/actor_update_s", "actor update"),
    ("update_s", "update (whole)"),
    ("publish_s", "weight sync"),
    ("step_s", "step (eval included)"),
)
"""Per-step timing keys of ``metrics.jsonl`` shown in the breakdown table (those present)."""


def _load_sampler(samples: list[tuple[float, float]], started: float, stop: threading.Event) -> None:
    while not stop.wait(5.0):
        samples.append((round(time.perf_counter() - started, 1), os.getloadavg()[0]))


def run(config_path: Path, *, fulmen: Sequence[str], out_json: Path) -> dict[str, Any]:
    """Train ``config_path`` from a fresh output directory; write and return the stamped rows."""
    config = load_config(config_path, base_dir=ROOT)
    out_dir = config.resolve(config.run.output_dir)
    shutil.rmtree(out_dir, ignore_errors=True)
    metrics_path = out_dir / "metrics.jsonl"
    load_before = os.getloadavg()[0]
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    started = time.perf_counter()
    samples: list[tuple[float, float]] = []
    stop = threading.Event()
    sampler = threading.Thread(target=_load_sampler, args=(samples, started, stop), daemon=True)
    sampler.start()
    proc = subprocess.Popen([*fulmen, "train", str(config_path)], cwd=ROOT)
    rows: list[dict[str, Any]] = []
    seen = 0
    while True:
        finished = proc.poll() is not None
        if metrics_path.exists():
            lines = metrics_path.read_text().splitlines()
            now = round(time.perf_counter() - started, 1)
            for line in lines[seen:]:
                if line.strip():
                    rows.append({**json.loads(line), "wall_s": now})
            seen = len(lines)
        if finished:
            break
        time.sleep(0.5)
    wall = time.perf_counter() - started
    stop.set()
    result: dict[str, Any] = {
        "config": str(config_path),
        "backend": config.backend,
        "returncode": proc.returncode,
        "started_utc": started_at,
        "wall_s": round(wall, 1),
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "load_samples": samples,
        "settings": {
            "steps": config.train.steps,
            "tasks_per_step": config.train.tasks_per_step,
            "group_size": config.train.group_size,
            "learning_rate": config.train.learning_rate,
            "temperature": config.train.temperature,
            "max_tokens": config.train.max_tokens,
            "eval_every": config.train.eval_every,
        },
        "rows": rows,
    }
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(result, indent=1) + "\n")
    if proc.returncode != 0:
        raise SystemExit(f"{config_path}: fulmen train exited {proc.returncode}")
    return result


def _evals(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in result["rows"] if r.get("kind") == "eval"]


def _trains(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in result["rows"] if r.get("kind") == "train"]


def _load_range(result: dict[str, Any]) -> str:
    loads = [load for _, load in result["load_samples"]] or [result["load_before"]]
    return f"{result['load_before']:.1f} at start, {min(loads):.1f}–{max(loads):.1f} during"


def _seconds(value: float) -> str:
    return f"{value:.2f}" if value < 1 else f"{value:.1f}"


def markdown(results: Sequence[dict[str, Any]]) -> str:
    """The held-out table and the per-step breakdown table of the results."""
    lines = [
        "| backend | held-out success (greedy) by step, at wall clock | wall clock (start-up included) | 1-min load average |",
        "|---|---|---|---|",
    ]
    for r in results:
        curve = " → ".join(
            f"{e['step']}: **{e['success_rate']:.0%}** ({e['wall_s']:.0f} s)" for e in _evals(r)
        )
        lines.append(f"| {r['backend']} | {curve} | {r['wall_s']:.0f} s | {_load_range(r)} |")
    present = [
        (key, name)
        for key, name in STEP_COLUMNS
        if any(key in row for r in results for row in _trains(r))
    ]
    lines += [
        "",
        "| backend | step | " + " | ".join(f"{name} s" for _, name in present) + " | rows | train reward |",
        "|---|---|" + "---|" * len(present) + "---|---|",
    ]
    for r in results:
        for row in _trains(r):
            cells = [_seconds(row[key]) if key in row else "–" for key, _ in present]
            lines.append(
                f"| {r['backend']} | {row['step']} | " + " | ".join(cells)
                + f" | {row.get('rows', '–')} | {row.get('reward_mean', float('nan')):.2f} |"
            )
    return "\n".join(lines)


def plot(results: Sequence[dict[str, Any]], png: Path) -> None:
    """Held-out success and train reward by step, and held-out success by wall clock."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_step, by_time) = plt.subplots(1, 2, figsize=(11, 4))
    for r, colour in zip(results, ("tab:blue", "tab:orange", "tab:green"), strict=False):
        evals, trains = _evals(r), _trains(r)
        name = r["backend"]
        by_step.plot([e["step"] for e in evals], [e["success_rate"] for e in evals], "o-",
                     color=colour, label=f"{name}: held-out success (greedy)")
        by_step.plot([t["step"] for t in trains], [t.get("reward_mean", float("nan")) for t in trains],
                     "--", color=colour, alpha=0.6, label=f"{name}: train reward (sampled)")
        by_time.plot([e["wall_s"] for e in evals], [e["success_rate"] for e in evals], "o-",
                     color=colour, label=f"{name} (run ends at {r['wall_s']:.0f} s)")
    s = results[0]["settings"]
    by_step.set_title(f"calculator, {s['tasks_per_step']} tasks x {s['group_size']} per step, lr {s['learning_rate']:g}")
    by_step.set_xlabel("step")
    by_step.set_ylim(-0.02, 1.02)
    by_step.legend(loc="lower right", fontsize=8)
    by_time.set_title("held-out success by wall clock (start-up included)")
    by_time.set_xlabel("seconds since `fulmen train` started")
    by_time.set_ylim(-0.02, 1.02)
    by_time.set_xlim(0, max(960.0, *(r["wall_s"] + 30 for r in results)))
    by_time.axvline(900, color="grey", linestyle=":", label="15 min")
    by_time.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """``run CONFIG`` or ``report JSON...`` (module docstring)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="train one config, stamping its metrics rows")
    run_p.add_argument("config", type=Path)
    run_p.add_argument("--fulmen", default=None, help="the fulmen command (default: this Python's)")
    run_p.add_argument("--json", type=Path, required=True, help="where to write the stamped rows")
    report_p = sub.add_parser("report", help="tables and curve of finished runs")
    report_p.add_argument("results", type=Path, nargs="+")
    report_p.add_argument("--png", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.command == "run":
        fulmen = [args.fulmen] if args.fulmen else [sys.executable, "-m", "fulmen.cli"]
        run(args.config, fulmen=fulmen, out_json=args.json)
        return 0
    results = [json.loads(p.read_text()) for p in args.results]
    print(markdown(results))
    if args.png is not None:
        plot(results, args.png)
        print(f"curve: {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
