"""Peak memory of one real training step of a Qwen2.5-0.5B-shaped model on the CPU, LoRA vs full.

A random-initialised model of Qwen2.5-0.5B's published shape (494 M parameters, 151,936-row
embedding; :data:`fulmen_local.families.SHAPES` ``"qwen2.5-0.5b"``) with the Qwen2.5 family's
tokenizer and ChatML/Hermes template is written once. Then, per mode, a fresh process runs
``fulmen train`` for ONE step through the whole stack — an OpenAI-client agent over HTTP (one
16-token call per episode, 8 episodes), the gateway, the SQLite store, the embedded inference
server, credit, one GRPO update, the hot swap, the checkpoint — and reports its peak resident
memory (``ru_maxrss``: the server's and trainer's models, the optimizer state and every
activation). A run whose step did not update (no trained tokens) is an error, not a figure.

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

_AGENT = '''
import zlib
from openai import OpenAI

def solve(task, ctx):
    """One chat call of 16 tokens (a 0.5 B model generates slowly on two CPU cores)."""
    client = OpenAI(base_url=ctx.base_url, api_key=ctx.api_key, timeout=1800.0, max_retries=0)
    reply = client.chat.completions.create(
        model="policy", max_tokens=16,
        messages=[{"role": "user", "content": task.data["question"]}],
    )
    return reply.choices[0].message.content

def reward(task, output, ctx):
    """Varies with the generated text, so the groups have signal and the step really updates."""
    return float(zlib.crc32((output or "").encode()) % 2)
'''


def _config(base: Path, out: Path, lora: bool) -> str:
    local = 'lora = { rank = 16, alpha = 32, target_modules = "all-linear" }\n' if lora else ""
    return f"""backend = "local"
[run]
output_dir = "{out}"
seed = 0
[agent]
entry = "bench_agent:solve"
reward = "bench_agent:reward"
concurrency = 8
timeout_s = 1800
[data]
train = "examples.calculator.agent:train_tasks"
[model]
path = "{base}"
[train]
steps = 1
tasks_per_step = 2
group_size = 4
max_tokens = 16
learning_rate = 1e-5
[local]
threads = 2
micro_batch_tokens = 2048
{local}"""


def _trained_tokens(metrics: Path) -> float:
    rows = [json.loads(x) for x in metrics.read_text().splitlines()]
    return sum(float(r.get("num_tokens") or 0) for r in rows if r.get("kind") == "train")


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
    (work / "bench_agent.py").write_text(_AGENT)
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
        trained = _trained_tokens(work / f"run-{mode}" / "metrics.jsonl")
        if not trained:
            raise SystemExit(f"{mode}: the step did not update (no trained tokens): see {work}")
        fields["trained_tokens"] = str(trained)
        results[mode] = {k: float(v) for k, v in fields.items()}
        print(f"{mode}: {line}", file=sys.stderr)
    print("| mode | peak RSS (GiB) | trained tokens | wall (s) | exit |")
    print("|---|---|---|---|---|")
    for mode, r in results.items():
        print(
            f"| {mode} | {r['peak_gib']:.2f} | {r['trained_tokens']:.0f} | {r['wall_s']:.0f} "
            f"| {int(r['exit'])} |"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
