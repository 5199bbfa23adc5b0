"""The verl CPU learning run and its embedded twin (examples/calculator/train_verl_cpu.toml and
train_verl_cpu_embedded.toml) are compared side by side in packages/verl-backend/README.md; the
comparison holds only while both train the same base on the same task with the same settings."""

from __future__ import annotations

from _smoke import REPO
from fulmen.config import load_config

CALCULATOR = REPO / "examples" / "calculator"


def test_the_embedded_twin_has_the_verl_runs_settings() -> None:
    verl = load_config(CALCULATOR / "train_verl_cpu.toml", base_dir=REPO)
    twin = load_config(CALCULATOR / "train_verl_cpu_embedded.toml", base_dir=REPO)
    assert (verl.backend, twin.backend) == ("verl", "local")
    for section in ("agent", "data", "model", "train", "credit", "batch", "alarms", "policies"):
        assert getattr(twin, section) == getattr(verl, section), section
    assert verl.run.seed == twin.run.seed
    assert verl.run.output_dir != twin.run.output_dir
