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
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fulmen import Transition
from fulmen.config import load_config
from fulmen.store import SQLiteStore
from fulmen_local.train.model_setup import prepare_model
from fulmen_tasks.chain import check_final_answer

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


def _called_key(message: Mapping[str, Any]) -> str | None:
    """The ``key`` argument of a response's first tool call (None: no call; "" unreadable)."""
    calls = message.get("tool_calls") or []
    if not calls:
        return None
    try:
        arguments = json.loads(calls[0]["function"]["arguments"])
    except (KeyError, TypeError, json.JSONDecodeError):
        return ""
    return str(arguments.get("key", "")) if isinstance(arguments, dict) else ""


def _call_outcome(transition: Transition, first_key: str) -> str:
    """What one call did, named by what it saw: ``first call: right`` (the question's key),
    ``after see: miscopied`` (another key than the one named), ``after value: answered`` ..."""
    seen = transition.request_messages[-1] if transition.request_messages else {}
    content = str(seen.get("content") or "")
    if seen.get("role") == "user":
        where, wanted = "first call", first_key
    elif content.startswith("see "):
        where, wanted = "after see", content.removeprefix("see ")
    elif content.startswith("value "):
        text = str(transition.response_message.get("content") or "")
        return f"after value: {'answered' if check_final_answer(text, int(content[6:])) else 'other'}"
    else:
        where, wanted = "after error", first_key
    key = _called_key(transition.response_message)
    return f"{where}: {'no call' if key is None else 'right' if key == wanted else 'miscopied'}"


def step_figures(db: Path, steps: Sequence[int]) -> dict[str, dict[str, list[int] | int]]:
    """Training episodes of ``steps`` in a run's store (step 1 samples the base model):
    ``by_length`` ``{keys: [solved, episodes]}`` (solved: final reward 1) and ``calls``
    (:func:`_call_outcome` counts)."""
    groups = {f"step{s}" for s in steps}
    store = SQLiteStore(db)
    lengths: dict[str, list[int]] = {}
    calls: dict[str, int] = {}
    try:
        for episode in store.list_episodes():
            if (episode.group_id or "").split(":")[0] not in groups:
                continue
            keys: list[str] = episode.task.data["keys"]
            rewards = store.rewards(episode.id)
            cell = lengths.setdefault(str(len(keys)), [0, 0])
            cell[0] += int(bool(rewards) and rewards[-1].value == 1.0)
            cell[1] += 1
            for transition in store.transitions(episode.id):
                outcome = _call_outcome(transition, keys[0])
                calls[outcome] = calls.get(outcome, 0) + 1
    finally:
        store.close()
    return {"by_length": dict(sorted(lengths.items())), "calls": dict(sorted(calls.items()))}


def run_one(assigner: str, seed: int) -> dict[str, Any]:
    """Train one variant from a fresh output directory; its rows, wall clock and load."""
    path = variant(assigner, seed)
    out_dir = ROOT / OUT / f"{assigner}-s{seed}"
    metrics = out_dir / "metrics.jsonl"
    shutil.rmtree(out_dir, ignore_errors=True)
    load_before = os.getloadavg()[0]
    started_utc = datetime.now(UTC).isoformat(timespec="seconds")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "fulmen.cli", "train", str(path)], cwd=ROOT)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{path}: fulmen train exited {done.returncode}")
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return {
        "assigner": assigner,
        "seed": seed,
        "started_utc": started_utc,
        "wall_s": round(wall, 1),
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "rows": rows,
        "figures": figures_of(out_dir, load_config(path).train.steps),
    }


LAST_STEPS = 4
"""How many final training steps are pooled as "last" in the figures (same tasks for every
assigner of one seed: the task order depends only on ``[run] seed``)."""


def figures_of(out_dir: Path, last_step: int) -> dict[str, dict[str, Any]]:
    """:func:`step_figures` of a run's first step (``"first"``: the base model sampled) and
    of its last :data:`LAST_STEPS` steps pooled (``"last"``)."""
    db = out_dir / "episodes.db"
    last = range(max(2, last_step - LAST_STEPS + 1), last_step + 1)
    return {"first": step_figures(db, [1]), "last": step_figures(db, list(last))}


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
    shares = [row["gigpo/step_groups"] for r in results for row in r["rows"] if "gigpo/step_groups" in row]
    if shares:
        lines += ["", f"`gigpo/step_groups` (share of calls in a step group of ≥ 2): mean {statistics.fmean(shares):.2f}, "
                  f"{min(shares):.2f}–{max(shares):.2f} over {len(shares)} training steps."]
    lines += ["", *step_tables(results)]
    loads = [x for r in results for x in (r["load_before"], r["load_after"])]
    lines.append("")
    lines.append(f"{len(results)} runs; 1-min load average {min(loads):.1f}–{max(loads):.1f} at run starts/ends.")
    return "\n".join(lines)


def _figures(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A run's :func:`figures_of` (read from its run directory when the results predate them)."""
    if "figures" in result:
        return result["figures"]
    last = max(row["step"] for row in result["rows"] if row.get("kind") == "train")
    return figures_of(ROOT / OUT / f"{result['assigner']}-s{result['seed']}", last)


def step_tables(results: Sequence[dict[str, Any]]) -> list[str]:
    """Sampled training episodes of the first step and of the last :data:`LAST_STEPS` steps,
    seeds pooled: success by chain length per assigner, then what the calls did (every run's
    step 1 samples the same base, so it is pooled into one row)."""
    lengths: dict[tuple[str, str, str], list[int]] = {}
    calls: dict[tuple[str, str], int] = {}
    for r in results:
        for step, figures in _figures(r).items():
            when = step
            for keys, (solved, total) in figures["by_length"].items():
                cell = lengths.setdefault((r["assigner"], when, keys), [0, 0])
                cell[0] += solved
                cell[1] += total
            for outcome, n in figures["calls"].items():
                key = ("base (step 1)" if when == "first" else r["assigner"], outcome)
                calls[key] = calls.get(key, 0) + n
    keys = sorted({k for _, _, k in lengths})
    lines = [
        "| assigner | " + " | ".join(f"{k} keys: step 1 → last {LAST_STEPS}" for k in keys) + " |",
        "|---|" + "---|" * len(keys),
    ]
    for assigner in dict.fromkeys(a for a, _, _ in lengths):
        cells = []
        for k in keys:
            first, last = lengths.get((assigner, "first", k), [0, 0]), lengths.get((assigner, "last", k), [0, 0])
            cells.append(f"{first[0] / max(first[1], 1):.0%} → {last[0] / max(last[1], 1):.0%}")
        lines.append(f"| `{assigner}` | " + " | ".join(cells) + " |")
    outcomes = sorted({o for _, o in calls})
    lines += ["", "| calls | " + " | ".join(outcomes) + " |", "|---|" + "---|" * len(outcomes)]
    for who in dict.fromkeys(w for w, _ in calls):
        lines.append(f"| {who} | " + " | ".join(str(calls.get((who, o), 0)) for o in outcomes) + " |")
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
    ax.set_title("tool chain: held-out success (chains of 3-4 keys, greedy), mean ± sd over seeds")
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
    report(json.loads(args.results.read_text()), png=args.png)
    return 0


def report(results: Sequence[dict[str, Any]], *, png: Path | None) -> None:
    """Print the Markdown tables of ``results``; draw the curves into ``png`` when given."""
    print(markdown(results))
    if png is None:
        return
    plot(results, png)
    print(f"curve: {png}")


if __name__ == "__main__":
    raise SystemExit(main())
