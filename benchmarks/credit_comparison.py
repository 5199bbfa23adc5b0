"""Credit assigners compared on the tool-chain example (issue 16): same base, same budget.

It trains ``examples/tool_chain/train.toml`` once per assigner and seed with the real
``fulmen train`` command (a subprocess, as a user runs it): only ``[credit] assigner``,
``[run] seed`` and ``[run] output_dir`` change (``runs/credit-comparison/<assigner>-s<seed>``),
every other setting is the file's. The base model (``[model] path``) is built once, before
the first run, outside every timing. Each finished run's ``metrics.jsonl`` rows are copied
into one JSON file with its wall clock and load average; a run already in the file is not run
again, so a cut-off sweep resumes where it stopped. Then it prints the Markdown table (held-out
success, mean ± sample sd over seeds, per evaluated step) and draws the curves with a ±sd band::

    uv run --locked python benchmarks/credit_comparison.py runs/credit-comparison/results.json \\
        --png benchmarks/credit_comparison.png
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fulmen.config import load_config
from fulmen.store import SQLiteStore
from fulmen_local.train.model_setup import prepare_model

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "tool_chain" / "train.toml"
ASSIGNERS = ("grpo", "turn_grpo", "gigpo", "broadcast")
SEEDS = (0, 1, 2)
OUT = "runs/credit-comparison"


def _set(text: str, key: str, value: str) -> str:
    """``text`` with the one line ``key = ...`` set to ``value`` (fails unless exactly one)."""
    new, n = re.subn(rf"^{re.escape(key)} = .*$", f"{key} = {value}", text, flags=re.MULTILINE)
    if n != 1:
        raise SystemExit(f"{CONFIG}: expected one line '{key} = ...', found {n}")
    return new


def variant(assigner: str, seed: int) -> Path:
    """Write and validate the config of one run; returns its path (in the run's directory)."""
    text = CONFIG.read_text()
    name = f"{assigner}-s{seed}"
    text = _set(text, "assigner", json.dumps(assigner))
    text = _set(text, "seed", str(seed))
    text = _set(text, "output_dir", json.dumps(f"{OUT}/{name}"))
    path = ROOT / OUT / "configs" / f"{name}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    config = load_config(path, base_dir=ROOT)
    assert config.credit.assigner == assigner and config.run.seed == seed
    return path


def by_length(db: Path, step: int) -> dict[str, list[int]]:
    """Training episodes of ``step`` in the run's store, by chain length: ``{keys: [solved,
    episodes]}`` (step 1 samples the base model; a success is a final reward of 1)."""
    store = SQLiteStore(db)
    out: dict[str, list[int]] = {}
    try:
        for episode in store.list_episodes():
            if not (episode.group_id or "").startswith(f"step{step}:"):
                continue
            keys = str(len(episode.task.data["keys"]))
            rewards = store.rewards(episode.id)
            cell = out.setdefault(keys, [0, 0])
            cell[0] += int(bool(rewards) and rewards[-1].value == 1.0)
            cell[1] += 1
    finally:
        store.close()
    return dict(sorted(out.items()))


def run_one(assigner: str, seed: int) -> dict[str, Any]:
    """Train one variant from a fresh output directory; its rows, wall clock and load."""
    path = variant(assigner, seed)
    out_dir = ROOT / OUT / f"{assigner}-s{seed}"
    metrics = out_dir / "metrics.jsonl"
    shutil.rmtree(out_dir, ignore_errors=True)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "fulmen.cli", "train", str(path)], cwd=ROOT)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{path}: fulmen train exited {done.returncode}")
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return {
        "assigner": assigner,
        "seed": seed,
        "started_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_s": round(wall, 1),
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "rows": rows,
        "by_length": lengths_of(out_dir, load_config(path).train.steps),
    }


def lengths_of(out_dir: Path, last_step: int) -> dict[str, dict[str, list[int]]]:
    """:func:`by_length` of a run's first and last training steps, keyed by step."""
    return {str(s): by_length(out_dir / "episodes.db", s) for s in (1, last_step)}


def sweep(out_json: Path, assigners: Sequence[str], seeds: Sequence[int]) -> None:
    """Run every (assigner, seed) pair not yet in ``out_json``, seed-major (so a cut-off sweep
    has whole seeds), writing ``out_json`` after each run."""
    results: list[dict[str, Any]] = json.loads(out_json.read_text()) if out_json.exists() else []
    prepare_model(load_config(CONFIG, base_dir=ROOT), print)  # the base, outside every timing
    done = {(r["assigner"], r["seed"]) for r in results}
    for seed in seeds:
        for assigner in assigners:
            if (assigner, seed) in done:
                continue
            results.append(run_one(assigner, seed))
            out_json.parent.mkdir(parents=True, exist_ok=True)
            out_json.write_text(json.dumps(results, indent=1) + "\n")


def _evals(result: dict[str, Any]) -> dict[int, float]:
    return {r["step"]: r["success_rate"] for r in result["rows"] if r.get("kind") == "eval"}


def curves(results: Sequence[dict[str, Any]]) -> dict[str, dict[int, list[float]]]:
    """Held-out success per assigner and evaluated step, one value per seed."""
    out: dict[str, dict[int, list[float]]] = {}
    for r in results:
        for step, success in _evals(r).items():
            out.setdefault(r["assigner"], {}).setdefault(step, []).append(success)
    return out


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def markdown(results: Sequence[dict[str, Any]]) -> str:
    """Held-out success (mean ± sd over seeds) per assigner and step, then final per seed."""
    table = curves(results)
    steps = sorted({s for by_step in table.values() for s in by_step})
    lines = [
        "| assigner | " + " | ".join(f"step {s}" for s in steps) + " | final, per seed | wall s per run |",
        "|---|" + "---|" * len(steps) + "---|---|",
    ]
    for assigner, by_step in table.items():
        cells: list[str] = []
        for s in steps:
            values = by_step.get(s, [])
            mean, sd = _mean_sd(values) if values else (float("nan"), 0.0)
            cells.append(f"{mean:.1%} ± {sd:.1%}" if values else "–")
        runs = [r for r in results if r["assigner"] == assigner]
        final = ", ".join(f"{_evals(r)[max(_evals(r))]:.0%}" for r in sorted(runs, key=lambda r: r["seed"]))
        walls = "/".join(f"{r['wall_s']:.0f}" for r in sorted(runs, key=lambda r: r["seed"]))
        lines.append(f"| `{assigner}` | " + " | ".join(cells) + f" | {final} | {walls} |")
    lines += ["", *length_table(results)]
    loads = [x for r in results for x in (r["load_before"], r["load_after"])]
    lines.append("")
    lines.append(f"{len(results)} runs; 1-min load average {min(loads):.1f}–{max(loads):.1f} at run starts/ends.")
    return "\n".join(lines)


def length_table(results: Sequence[dict[str, Any]]) -> list[str]:
    """Sampled training success by chain length at the first and last step, seeds pooled (runs
    recorded without ``by_length`` are read from their run directories)."""
    pooled: dict[tuple[str, str, str], list[int]] = {}
    for r in results:
        last = max(row["step"] for row in r["rows"] if row.get("kind") == "train")
        table = r.get("by_length") or lengths_of(ROOT / OUT / f"{r['assigner']}-s{r['seed']}", last)
        for step, cells in table.items():
            for keys, (solved, total) in cells.items():
                cell = pooled.setdefault((r["assigner"], "first" if step == "1" else "last", keys), [0, 0])
                cell[0] += solved
                cell[1] += total
    keys = sorted({k for _, _, k in pooled})
    lines = [
        "| assigner | " + " | ".join(f"{k} keys, step 1 → last" for k in keys) + " |",
        "|---|" + "---|" * len(keys),
    ]
    for assigner in dict.fromkeys(a for a, _, _ in pooled):
        cells = []
        for k in keys:
            first, last = pooled.get((assigner, "first", k), [0, 0]), pooled.get((assigner, "last", k), [0, 0])
            cells.append(f"{first[0] / max(first[1], 1):.0%} → {last[0] / max(last[1], 1):.0%} (n={first[1]}/{last[1]})")
        lines.append(f"| `{assigner}` | " + " | ".join(cells) + " |")
    return lines


def plot(results: Sequence[dict[str, Any]], png: Path) -> None:
    """Held-out success by step, mean over seeds with a ±sd band, one line per assigner."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for assigner, by_step in curves(results).items():
        steps = sorted(by_step)
        stats = [_mean_sd(by_step[s]) for s in steps]
        mean = [m for m, _ in stats]
        ax.plot(steps, mean, "o-", label=f"{assigner} ({len(by_step[steps[-1]])} seeds)")
        ax.fill_between(steps, [m - sd for m, sd in stats], [m + sd for m, sd in stats], alpha=0.15)
    ax.set_title("tool chain: held-out success (3-4 calls, greedy), mean ± sd over seeds")
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("held-out success")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Run the missing (assigner, seed) pairs into RESULTS (none with ``--report-only``), then
    print the table and draw the curves (module docstring)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("results", type=Path, help="the results JSON (runs already in it are kept)")
    parser.add_argument("--assigners", nargs="+", default=list(ASSIGNERS), choices=ASSIGNERS)
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--report-only", action="store_true", help="train nothing; report RESULTS")
    parser.add_argument("--png", type=Path, default=None, help="draw the curves here")
    args = parser.parse_args(argv)
    if not args.report_only:
        sweep(args.results, args.assigners, args.seeds)
    elif not args.results.is_file():
        raise SystemExit(f"{args.results}: no such results file; run the sweep first (without --report-only)")
    results: list[dict[str, Any]] = json.loads(args.results.read_text())
    print(markdown(results))
    if args.png is not None:
        plot(results, args.png)
        print(f"curve: {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
