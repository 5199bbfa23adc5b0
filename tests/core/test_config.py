"""Training config: validation errors name the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from fulmen.config import ConfigError, load_config, parse_config

MINIMAL = {
    "agent": {"entry": "pkg.agent:solve"},
    "data": {"train": "pkg.agent:tasks"},
    "model": {"path": "runs/base"},
}


def test_minimal_config_gets_defaults() -> None:
    config = parse_config(MINIMAL)
    assert config.backend == "local"
    assert config.train.group_size == 8
    assert config.credit.assigner == "grpo"
    assert config.batch.mode == "per_call"


def test_full_file(tmp_path: Path) -> None:
    path = tmp_path / "train.toml"
    path.write_text(
        """
backend = "local"
[run]
output_dir = "out"
seed = 3
[agent]
entry = "a:b"
timeout_s = 5
[data]
train = "a:train"
eval = "a:eval"
[model]
path = "m"
[train]
steps = 2
learning_rate = 0.01
[credit]
assigner = "turn_grpo"
std = false
[batch]
mode = "merged"
[local]
threads = 2
"""
    )
    config = load_config(path, base_dir=tmp_path)
    assert config.run.seed == 3 and config.agent.timeout_s == 5.0
    assert config.credit.options == {"std": False}
    assert config.backend_options == {"local": {"threads": 2}}
    assert config.resolve("out") == tmp_path / "out"


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"trian": {}}, "unknown key 'trian'. Did you mean 'train'?"),
        ({"train": {"stpes": 3}}, r"\[train\]: unknown key 'stpes'. Did you mean 'steps'?"),
        ({"train": {"steps": "ten"}}, r"\[train\] steps = 'ten': expected an integer"),
        ({"train": {"group_size": 0}}, "group_size = 0: must be at least 1"),
        ({"batch": {"mode": "fast"}}, "expected 'per_call' or 'merged'"),
        ({"agent": {}}, r"\[agent\]: missing key 'entry'"),
        ({"train": 3}, r"\[train\] must be a table"),
    ],
)
def test_errors_name_the_key(patch: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({**MINIMAL, **patch})


def test_missing_section() -> None:
    with pytest.raises(ConfigError, match=r"missing section \[model\] \(it needs: path\)"):
        parse_config({"agent": {"entry": "a:b"}, "data": {"train": "x"}})


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.toml")
