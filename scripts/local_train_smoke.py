"""A real ``fulmen train`` run of the embedded backend on whatever device ``auto`` picks.

Builds a random-initialised Qwen2.5-family model (the families package: byte-level BPE, the
Qwen2.5 ChatML/Hermes template), then runs ``fulmen train`` through the whole stack — the
calculator agent (OpenAI client over HTTP), the capture gateway, the SQLite store, the embedded
inference server, GRPO with LoRA or full fine-tuning, the hot swap, the checkpoint — for a few
steps with ``[local] device = "auto"`` and ``dtype = "auto"`` (bf16 on a GPU). The reward is a
hash of the answer (the random model cannot solve anything; the hash gives every group signal so
each step really updates). Prints the device, dtype, per-step throughput and writes
``summary.json`` into ``--out``.

Run: ``uv run --locked python scripts/local_train_smoke.py --out /tmp/smoke`` (CPU here; the
GPU check runs it on one GPU).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_REWARD = '''
import zlib

def reward(task, output, ctx):
    """A hash of the answer: varies within every group, so each GRPO step has signal."""
    return float(zlib.crc32((output or "").encode()) % 2)
'''


def _config(base: Path, out: Path, *, steps: int, lora: bool, device: str) -> str:
    lora_line = 'lora = { rank = 16, alpha = 32 }\n' if lora else ""
    return f"""backend = "local"
[run]
output_dir = "{out}"
seed = 0
[agent]
entry = "examples.calculator.agent:solve"
reward = "smoke_reward:reward"
concurrency = 128
[data]
train = "examples.calculator.agent:train_tasks"
[model]
path = "{base}"
[train]
steps = {steps}
tasks_per_step = 16
group_size = 8
max_tokens = 64
learning_rate = 1e-4
[local]
device = "{device}"
dtype = "auto"
{lora_line}"""


def main() -> int:
    """Build, train, summarise; returns the exit status of ``fulmen train``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--shape", default="10m", help="families shape name (tiny, 10m, ...)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "smoke_reward.py").write_text(_REWARD)
    sys.path[:0] = [str(args.out), str(REPO)]
    from fulmen.cli import main as fulmen_main
    from fulmen_local.families import build_family_model
    base = args.out / f"qwen2.5-{args.shape}"
    started = time.perf_counter()
    build_family_model("qwen2.5", base, seed=0, shape=args.shape)
    built_s = time.perf_counter() - started
    run_dir = args.out / "run"
    config = args.out / "train.toml"
    config.write_text(
        _config(base, run_dir, steps=args.steps, lora=not args.full, device=args.device)
    )
    started = time.perf_counter()
    code = fulmen_main(["train", str(config)])
    wall = time.perf_counter() - started
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r.get("kind") == "train"]
    keys = ("step", "rollout_tokens_per_s", "train_tokens_per_s", "num_tokens", "rollout_s",
            "update_s", "kl", "grad_norm")
    summary = {
        "exit": code,
        "build_s": round(built_s, 1),
        "train_wall_s": round(wall, 1),
        "mode": "full" if args.full else "lora",
        "steps": [{k: r.get(k) for k in keys} for r in train],
    }
    try:
        import torch

        if torch.cuda.is_available():
            summary["gpu"] = torch.cuda.get_device_name()
            summary["max_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    except ImportError:  # pragma: no cover - torch is a dependency of fulmen-local
        pass
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return code


if __name__ == "__main__":
    raise SystemExit(main())
