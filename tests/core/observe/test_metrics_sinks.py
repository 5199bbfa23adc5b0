"""Metrics sinks: JSONL always, TensorBoard when the backend asks (the embedded one does); W&B / MLflow only when named in ``[run] trackers``,
with a clear error naming the pip install when one is not installed. No network: W&B runs
offline. (mlflow is not installed here, and must not be installed for these tests.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fulmen.config import ConfigError, parse_config
from fulmen.train.metrics_log import MetricsWriter, read_metrics

BASE = {"agent": {"entry": "a:b"}, "data": {"train": "a:b"}, "model": {"path": "m"}}


def test_the_default_writer_never_imports_a_tracker(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from fulmen.config import parse_config\n"
        "from fulmen.train.metrics_log import MetricsWriter\n"
        f"parse_config({BASE!r})\n"
        f"w = MetricsWriter(Path({str(tmp_path)!r}), tensorboard=True)\n"
        "w.write('train', 1, {'reward_mean': 0.5})\n"
        "w.close()\n"
        "print(sorted(m for m in ('wandb', 'mlflow') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert read_metrics(tmp_path / "metrics.jsonl") == [
        {"kind": "train", "step": 1, "reward_mean": 0.5}
    ]
    assert list((tmp_path / "tensorboard").iterdir())  # TensorBoard when asked


def test_without_tensorboard_only_the_jsonl_is_written(tmp_path: Path) -> None:
    writer = MetricsWriter(tmp_path)
    writer.write("eval", 0, {"success_rate": 0.5})
    writer.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]
    assert read_metrics(tmp_path / "metrics.jsonl") == [{"kind": "eval", "step": 0, "success_rate": 0.5}]


def test_a_tracker_that_is_not_installed_is_a_clear_config_error(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r'trackers = \["mlflow"\] needs mlflow.*pip install mlflow'
    ):
        MetricsWriter(tmp_path / "run", trackers=["mlflow"])
    assert not (tmp_path / "run").exists()  # nothing started or written


def test_wandb_missing_names_its_install(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "sys.modules['wandb'] = None  # as if not installed\n"
        "from pathlib import Path\n"
        "from fulmen.train.metrics_log import MetricsWriter\n"
        f"MetricsWriter(Path({str(tmp_path)!r}), trackers=['wandb'])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert 'ConfigError: [run] trackers = ["wandb"] needs wandb' in done.stderr
    assert "pip install wandb" in done.stderr


def test_trackers_key_is_validated() -> None:
    assert parse_config({**BASE, "run": {"trackers": ["wandb", "mlflow"]}}).run.trackers == (
        "wandb",
        "mlflow",
    )
    assert parse_config(BASE).run.trackers == ()
    with pytest.raises(
        ConfigError, match=r"\[run\] trackers\[0\]: expected 'wandb' or 'mlflow', got 'neptune'"
    ):
        parse_config({**BASE, "run": {"trackers": ["neptune"]}})
    with pytest.raises(ConfigError, match="expected a list of 'wandb' or 'mlflow'"):
        parse_config({**BASE, "run": {"trackers": "wandb"}})
    with pytest.raises(ConfigError, match="each entry at most once"):
        parse_config({**BASE, "run": {"trackers": ["wandb", "wandb"]}})
    with pytest.raises(ValueError, match="unknown 'neptune'"):
        MetricsWriter(Path("unused"), trackers=["neptune"])


@pytest.mark.slow
def test_wandb_offline_run_receives_the_scalars(tmp_path: Path) -> None:
    code = (
        "from pathlib import Path\n"
        "from fulmen.train.metrics_log import MetricsWriter\n"
        f"w = MetricsWriter(Path({str(tmp_path)!r}), trackers=['wandb'], run_name='obs',"
        " config={'train': {'steps': 2}})\n"
        "w.write('eval', 0, {'success_rate': 0.25})\n"
        "w.write('train', 1, {'reward_mean': 0.5, 'note': 'text is not a scalar'})\n"
        "w.close()\n"
    )
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0, done.stderr
    [log] = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    data = log.read_bytes()
    for key in (b"train/reward_mean", b"eval/success_rate", b"obs"):
        assert key in data
    assert b"train/note" not in data
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[1])["note"]
