"""Peak memory of one real training step of a Qwen2.5-0.5B-shaped model on the CPU, LoRA vs full.

A random-initialised model of Qwen2.5-0.5B's published shape (494 M parameters, 151,936-row
embedding; :data:`fulmen_local.families.SHAPES` ``"qwen2.5-0.5b"``) with the Qwen2 family's
tokenizer and ChatML/Hermes template is written once. Then, per mode, a fresh process runs
``fulmen train`` for ONE step through the whole stack — the calculator agent over HTTP, the
gateway, the SQLite store, the embedded inference server, credit, one GRPO update, the hot swap,
the checkpoint — and reports its peak resident memory (``ru_maxrss``, which counts the server's
and trainer's models, the optimizer and every activation).

Run: ``uv run --locked python benchmarks/lora_memory.py [--modes lora full]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_CHILD = r"""
import resource, sys, time
from fulmen.cli import main
started = time.perf_counter()
code = main(["train", sys.argv[1]])
peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
print(f"RESULT exit={code} peak_gib={peak_gib:.2f} wall_s={time.perf_counter() - started:.0f}")
"""

_REWARD = '''
import zlib

def reward(task, output, ctx):
    """Varies with the generated text, so the one GRPO group has signal and really updates."""
    return float(zlib.crc32((output or "").encode()) % 2)
'''


def _config(base: Path, out: Path, lora: bool) -> str:
    local = 'lora = { rank = 16, alpha = 32, target_modules = "all-linear" }\n' if lora else ""
    return f"""backend = "local"
[run]
output_dir = "{out}"
seed = 0
[agent]
entry = "examples.calculator.agent:solve"
reward = "bench_reward:reward"
concurrency = 4
[data]
train = "examples.calculator.agent:train_tasks"
[model]
path = "{base}"
[train]
steps = 1
tasks_per_step = 1
group_size = 4
max_tokens = 24
learning_rate = 1e-5
[local]
threads = 2
micro_batch_tokens = 2048
{local}"""


def main() -> None:
    """Build the model, run one step per mode, print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", nargs="+", default=["lora", "full"], choices=["lora", "full"])
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    from fulmen_local.families import build_family_model

    work = args.workdir or Path(tempfile.mkdtemp(prefix="fulmen-mem-"))
    base = work / "qwen2.5-0.5b-random"
    if not (base / "config.json").exists():
        started = time.perf_counter()
        build_family_model("qwen2.5", base, seed=0, shape="qwen2.5-0.5b")
        print(f"built {base} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    (work / "bench_reward.py").write_text(_REWARD)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(work), str(REPO)])}
    results: dict[str, dict[str, float]] = {}
    for mode in args.modes:
        config = work / f"{mode}.toml"
        config.write_text(_config(base, work / f"run-{mode}", lora=mode == "lora"))
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, str(config)], cwd=REPO, env=env,
            capture_output=True, text=True, timeout=3600,
        )
        line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT")), None)
        if line is None:
            raise SystemExit(f"{mode}: no result\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
        fields = dict(item.split("=") for item in line.split()[1:])
        results[mode] = {k: float(v) for k, v in fields.items()}
        print(f"{mode}: {line}", file=sys.stderr)
    print("| mode | peak RSS (GiB) | wall (s) | exit |")
    print("|---|---|---|---|")
    for mode, r in results.items():
        print(f"| {mode} | {r['peak_gib']:.2f} | {r['wall_s']:.0f} | {int(r['exit'])} |")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
