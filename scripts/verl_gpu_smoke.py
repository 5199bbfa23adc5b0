"""GPU smoke test of the verl backend: train the calculator agent for a few steps, print reward.

Needs one CUDA GPU and the GPU stack (``uv sync --locked --group gpu --no-group cpu``). Run from
the repository root::

    uv run --locked --group gpu --no-group cpu python scripts/verl_gpu_smoke.py \
        --model /models/Qwen2.5-0.5B-Instruct --steps 3

``--model`` is any local Hugging Face chat model whose tool calls vLLM's ``--tool-call-parser``
understands (Qwen2.5 instruct models: ``hermes``). Without ``--model`` the example's own tiny
character-level model is built (offline, ~1 min on CPU); its tool-call format is fulmen's own,
so expect the agent to answer without the tool. The script writes a config under
``runs/verl-smoke/``, runs ``VerlBackend().train`` on it and prints ``step N reward R`` lines
from ``metrics.jsonl``. Exit status: 0 when every step trained, else 1.

NOTE: written without access to a GPU; it has not been run on one yet.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CONFIG = """backend = "verl"
[run]
name = "verl-smoke"
output_dir = "{out}"
seed = 0
[agent]
entry = "examples.calculator.agent:solve"
reward = "examples.calculator.agent:reward"
timeout_s = 120
concurrency = 64
[data]
train = "examples.calculator.agent:train_tasks"
[model]
path = "{model}"
{build}name = "policy"
[train]
steps = {steps}
tasks_per_step = {tasks}
group_size = {group}
learning_rate = {lr}
max_tokens = 96
checkpoint_every = {steps}
[credit]
assigner = "grpo"
[verl]
n_gpus_per_node = 1
gpu_memory_utilization = {gpu_mem}
enforce_eager = true
tool_call_parser = "{parser}"
"""


def main() -> int:
    """Write the smoke config, train, print the reward of each step."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", default=None, help="local HF model dir (default: build the tiny one)"
    )
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=8, help="tasks per step")
    parser.add_argument("--group", type=int, default=4, help="episodes per task (GRPO group)")
    parser.add_argument("--lr", type=float, default=1e-6)
    parser.add_argument("--gpu-mem", type=float, default=0.4, help="vLLM gpu_memory_utilization")
    parser.add_argument("--tool-call-parser", default="hermes")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from fulmen_verl.backend import VerlBackend

    out = ROOT / "runs" / "verl-smoke"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    model = args.model or str(ROOT / "runs" / "calculator-base")
    build = "" if args.model else 'build = "examples.calculator.model:build"\n'
    config = out / "smoke.toml"
    config.write_text(
        CONFIG.format(
            out=out,
            model=model,
            build=build,
            steps=args.steps,
            tasks=args.tasks,
            group=args.group,
            lr=args.lr,
            gpu_mem=args.gpu_mem,
            parser=args.tool_call_parser,
        )
    )
    status = VerlBackend().train(config)
    metrics = out / "metrics.jsonl"
    rows = (
        [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
    )
    for row in rows:
        print(
            f"step {row['step']} reward {row['reward_mean']:.3f} rows {row.get('batch/rows', 0):.0f}"
        )
    return 0 if status == 0 and len(rows) == args.steps else 1


if __name__ == "__main__":
    raise SystemExit(main())
