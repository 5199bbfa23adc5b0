"""The embedded training loop end to end: real agent, gateway, server, store, GRPO, checkpoints.

Shortened runs of the README's main job (a few steps of a barely warm-started model). The
reward here is a deterministic stand-in that varies within groups, so that every step has
signal and really updates the weights; the full run's learning result is measured in
``benchmarks/`` and written in the README.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fulmen.config import ConfigError, parse_config
from fulmen.store import open_store
from fulmen.train import latest_checkpoint
from fulmen_local.train.loop import run_training

REPO = Path(__file__).resolve().parents[2]

REWARD_MODULE = '''
import zlib

def reward(task, output, ctx):
    """Deterministic, varies with the generated text: gives GRPO groups signal."""
    return float(zlib.crc32((output or "").encode()) % 2)
'''


def _config(tmp_path: Path, *, steps: int, base: Path) -> dict[str, Any]:
    return {
        "run": {"output_dir": str(tmp_path / "run"), "seed": 0},
        "agent": {
            "entry": "examples.calculator.agent:solve",
            "reward": "fulmen_test_reward:reward",
            "concurrency": 16,
        },
        "data": {
            "train": "examples.calculator.agent:train_tasks",
            "eval": "examples.calculator.agent:eval_tasks",
        },
        "model": {"path": str(base), "build": "examples.calculator.model:build_smoke"},
        "train": {
            "steps": steps, "tasks_per_step": 2, "group_size": 4, "max_tokens": 48,
            "eval_every": 0, "eval_size": 4, "learning_rate": 1e-2,
        },
        "credit": {"assigner": "grpo"},
        "local": {"threads": 2},
    }


@pytest.fixture(scope="module")
def base_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sys.path.insert(0, str(REPO))
    from examples.calculator.model import build_smoke

    return build_smoke(tmp_path_factory.mktemp("base") / "model")


@pytest.fixture
def reward_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "fulmen_test_reward.py").write_text(REWARD_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_training_steps_update_weights_and_write_metrics(
    tmp_path: Path, base_model: Path, reward_module: Path
) -> None:
    config = parse_config(_config(tmp_path, steps=2, base=base_model), base_dir=str(REPO))
    messages: list[str] = []
    result = run_training(config, log=messages.append)
    out = tmp_path / "run"
    rows = _rows(out / "metrics.jsonl")
    train = [r for r in rows if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2]
    for r in train:
        assert r["episodes"] == 8 and r["failed_episodes"] == 0
        assert r["rows"] > 0 and r["num_tokens"] > 0  # a real update happened
        assert r["grad_norm"] > 0
        for key in ("reward_mean", "reward_std", "success_rate", "kl", "clip_fraction",
                    "rollout_tokens_per_s", "dropped_groups", "drift_breaks"):
            assert key in r
    assert [r["step"] for r in rows if r["kind"] == "eval"] == [0, 2]
    assert result.before is not None and result.after is not None
    assert (out / "curve.png").stat().st_size > 10_000
    assert any(p.name.startswith("events") for p in (out / "tensorboard").iterdir())
    checkpoint = latest_checkpoint(out / "checkpoints")
    assert checkpoint is not None and checkpoint.step == 2
    # the weights moved, and the server generated step 2 with policy version 1
    import torch
    from safetensors.torch import load_file

    before = load_file(str(base_model / "model.safetensors"))
    after = load_file(str(checkpoint.path / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before)
    store = open_store(out / "episodes.db")
    try:
        versions = {t.policy_version for e in store.list_episodes(group_id=None) for t in store.transitions(e.id)}
        step2 = [e for e in store.list_episodes() if (e.group_id or "").startswith("step2:")]
        assert {t.policy_version for e in step2 for t in store.transitions(e.id)} == {1}
        assert 0 in versions
    finally:
        store.close()
    # `fulmen eval --checkpoint` of the final checkpoint reproduces the run's last greedy eval
    import asyncio

    from fulmen_local.train.evaluate import run_evaluation

    again = asyncio.run(run_evaluation(config, checkpoint=checkpoint.path, log=messages.append))
    assert (again.episodes, again.success_rate) == (
        result.after.episodes, result.after.success_rate
    )
    # a fresh run into the same directory is refused with the fix
    with pytest.raises(ConfigError, match="--resume"):
        run_training(config, log=messages.append)


@pytest.mark.slow
def test_lora_run_trains_only_adapters_and_evaluates_the_adapter_checkpoint(
    tmp_path: Path, base_model: Path, reward_module: Path
) -> None:
    raw = _config(tmp_path, steps=2, base=base_model)
    raw["local"]["lora"] = {"rank": 4, "alpha": 16}
    raw["train"]["kl_coef"] = 0.05  # the reference is the base with adapters disabled
    config = parse_config(raw, base_dir=str(REPO))
    messages: list[str] = []
    result = run_training(config, log=messages.append)
    assert any("LoRA" in m and "trained parameters" in m for m in messages)
    out = tmp_path / "run"
    train = [r for r in _rows(out / "metrics.jsonl") if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2]
    assert all(r["num_tokens"] > 0 and r["grad_norm"] > 0 for r in train)
    assert train[1]["kl"] > 0  # step 2 trains adapters that moved away from the base
    checkpoint = latest_checkpoint(out / "checkpoints")
    assert checkpoint is not None and checkpoint.step == 2
    assert (checkpoint.path / "adapter_config.json").is_file()
    assert not (checkpoint.path / "model.safetensors").exists()
    store = open_store(out / "episodes.db")
    try:
        step2 = [e for e in store.list_episodes() if (e.group_id or "").startswith("step2:")]
        assert {t.policy_version for e in step2 for t in store.transitions(e.id)} == {1}
    finally:
        store.close()
    import asyncio

    from fulmen_local.train.evaluate import run_evaluation

    assert result.after is not None
    again = asyncio.run(run_evaluation(config, checkpoint=checkpoint.path, log=messages.append))
    assert (again.episodes, again.success_rate) == (result.after.episodes, result.after.success_rate)
    # `fulmen merge` writes a full model that evaluates like the adapter checkpoint
    from fulmen.cli import main as fulmen_main

    config_path = tmp_path / "train.toml"
    config_path.write_text(_toml(raw))
    merged = tmp_path / "merged"
    argv = ["merge", str(config_path), "--checkpoint", str(checkpoint.path), "--out", str(merged)]
    assert fulmen_main(argv) == 0
    assert (merged / "config.json").is_file() and not (merged / "adapter_config.json").exists()
    full = asyncio.run(run_evaluation(config, checkpoint=merged, log=messages.append))
    assert (full.episodes, full.success_rate) == (again.episodes, again.success_rate)


@pytest.mark.slow
def test_kill_mid_run_then_resume_continues(tmp_path: Path, base_model: Path, reward_module: Path) -> None:
    raw = _config(tmp_path, steps=4, base=base_model)
    raw["train"]["eval_size"] = 2
    config_path = tmp_path / "train.toml"
    config_path.write_text(_toml(raw))
    env = {**os.environ, "PYTHONPATH": f"{reward_module}{os.pathsep}{REPO}"}
    cmd = [sys.executable, "-m", "fulmen.cli", "train", str(config_path)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ckpts = tmp_path / "run" / "checkpoints"
    deadline = time.monotonic() + 240
    while latest_checkpoint(ckpts) is None and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    killed_at = latest_checkpoint(ckpts)
    assert killed_at is not None and killed_at.step < 4, "the run finished before it was killed"
    done = subprocess.run([*cmd, "--resume"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"resumed from {killed_at.path}" in done.stderr
    train = [r for r in _rows(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "train"]
    steps = [r["step"] for r in train]
    # every step is present; at most the interrupted step was logged twice
    assert sorted(set(steps)) == [1, 2, 3, 4]
    assert len(steps) - len(set(steps)) <= 1
    final = latest_checkpoint(ckpts)
    assert final is not None and final.step == 4


def _toml(raw: dict[str, Any]) -> str:
    lines: list[str] = []
    for section, table in raw.items():
        lines.append(f"[{section}]")
        for key, value in table.items():
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)
