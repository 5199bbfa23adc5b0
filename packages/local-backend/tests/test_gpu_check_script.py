"""``scripts/local_gpu_check.py`` in its CPU mode (``--device cpu --tiny``): every phase runs
and its figures add up, so the one GPU run it is prepared for does not fail on a script bug."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[3] / "scripts"


@pytest.mark.slow
def test_gpu_check_runs_every_phase_on_cpu(tmp_path: Path) -> None:
    sys.path.insert(0, str(SCRIPTS))
    try:
        check = importlib.import_module("local_gpu_check")
        load = importlib.import_module("gpu_check_workload")
    finally:
        sys.path.remove(str(SCRIPTS))
    TINY, workload = load.TINY, load.workload
    argv = ["--device", "cpu", "--tiny", "--out", str(tmp_path), "--no-watchdog"]
    assert check.main(argv) == 0
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    assert (tmp_path / "gpu_check.log").stat().st_size > 0
    phases = [name for name, _, _ in check.PHASES]
    assert [p for p in phases if "error" in data[p] or "skipped" in data[p]] == []
    correctness = data["correctness"]
    assert correctness["ok_fp32"] and correctness["bf16_max_logprob_diff_vs_forward"] < 0.1
    # every request generated exactly its max_tokens (ignore_eos), through the engine and HTTP
    engine, server = data["engine"], data["server"]
    assert engine["generated_tokens"] == sum(m for _, m in workload(TINY, 200))
    assert engine["burst"]["generated_tokens"] == TINY.concurrency * TINY.new_tokens
    assert server["generated_tokens"] == sum(m for _, m in workload(TINY, 500))
    assert engine["errors"] == server["errors"] == []
    assert engine["stats"]["max_rows"] == TINY.concurrency
    trainer = data["trainer"]
    assert trainer["tokens_per_step"] == TINY.train_rows * TINY.train_len
    assert trainer["grpo_updater_tokens_per_s"] > 0 and trainer["fwd_bwd_adamw_tokens_per_s"] > 0
    assert set(data["eager_generate"]) >= {f"batch_{b}" for b in TINY.eager_batches}
    assert data["static_generate"]["tokens_per_s"] > 0
