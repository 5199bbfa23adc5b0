"""Training config: every table (core's, the credit assigner's, each backend's) is validated at
load, before anything starts, and errors name the key and the fix."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fulmen.backend_config import BackendSection, installed_backend_sections
from fulmen.config import ConfigError, load_config, parse_config
from fulmen.errors import ConfigWarning
from fulmen.validation import build
from fulmen_local.settings import LocalSettings, LoraSettings, parse_local_settings
from fulmen_verl.config import VerlConfig

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
    # the chosen backend's table is parsed even when absent: its defaults
    assert config.backend_sections == {"local": LocalSettings()}
    assert config.backend_options == {}


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
std_normalize = false
[batch]
mode = "merged"
[local]
threads = 2
lora = { rank = 4, target_modules = "q_proj" }
"""
    )
    config = load_config(path, base_dir=tmp_path)
    assert config.run.seed == 3 and config.agent.timeout_s == 5.0
    assert config.credit.options == {"std_normalize": False}
    assert config.backend_options == {
        "local": {"threads": 2, "lora": {"rank": 4, "target_modules": "q_proj"}}
    }
    assert config.backend_sections["local"] == LocalSettings(
        threads=2, lora=LoraSettings(rank=4, target_modules=("q_proj",))
    )
    assert config.resolve("out") == tmp_path / "out"
    assert config.source == str(path)


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"trian": {}}, r"trian: unknown key. Did you mean 'train'\?"),
        ({"train": {"stpes": 3}}, r"\[train\] stpes: unknown key. Did you mean 'steps'\?"),
        ({"train": {"steps": "ten"}}, r"\[train\] steps: expected an integer, got 'ten' \(str\)"),
        ({"train": {"steps": 2.5}}, r"\[train\] steps: expected an integer, got 2.5"),
        ({"train": {"group_size": 0}}, r"\[train\] group_size = 0: must be at least 1"),
        ({"train": {"learning_rate": float("inf")}}, r"learning_rate: expected a finite number"),
        ({"agent": {"entry": "a:b", "timeout_s": float("nan")}}, r"timeout_s: expected a finite"),
        ({"batch": {"mode": "fast"}}, r"mode: expected 'per_call' or 'merged', got 'fast'"),
        ({"agent": {}}, r"\[agent\] entry: missing required key \(a string\)"),
        ({"train": 3}, r"\[train\] must be a table"),
        ({"run": {"trackers": ["wandb", "wandb"]}}, r"each entry at most once"),
        ({"backend": 1}, r"backend: expected a string"),
        ({"backend": "lcoal"}, r"backend = 'lcoal': no installed backend.*Did you mean 'local'\?"),
        ({"lcoal": {"threads": 2}}, r"lcoal: unknown key. Did you mean 'local'\?"),
        ({"bakend": "local"}, r"bakend: unknown key. Did you mean 'backend'\?"),
    ],
)
def test_errors_name_the_key(patch: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({**MINIMAL, **patch})


@pytest.mark.parametrize(
    ("credit", "message"),
    [
        # the case: it passed load_config and died in backend.train() with a traceback
        ({"assigner": "grpo", "omega": 2}, r"\[credit\] assigner 'grpo' has no option 'omega'"),
        ({"assigner": "grpo", "gamma": 0.9}, r"'gamma' is an option of: discounted, gigpo, turn_grpo"),
        ({"assigner": "grpo", "std": False}, r"Did you mean 'std_normalize'\?"),
        ({"assigner": "gpro"}, r"unknown assigner 'gpro'.*Did you mean 'grpo'\?"),
        ({"assigner": "discounted", "gamma": float("nan")}, r"\[credit\] gamma: expected a finite"),
        ({"assigner": "grpo", "reward_weights": {"main": float("inf")}}, r"reward_weights.main: expected a finite"),
        ({"assigner": "discounted", "gamma": 1.5}, r"gamma: expected a number in \[0, 1\]"),
    ],
)
def test_credit_options_are_checked_at_load(credit: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        parse_config({**MINIMAL, "credit": credit}, source="x.toml")
    assert str(err.value).startswith("x.toml: [credit]")


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"local": {"thredas": 2}}, r"x.toml: \[local\] thredas: unknown key. Did you mean 'threads'\?"),
        ({"local": {"threads": "2"}}, r"\[local\] threads: expected an integer, got '2'"),
        ({"local": {"device": "tpu"}}, r"device = \"tpu\": expected"),
        ({"local": {"lora": {"rnak": 4}}}, r"\[local\] lora.rnak: unknown key. Did you mean 'rank'\?"),
        ({"local": {"lora": {"alpha": float("inf")}}}, r"lora.alpha: expected a finite number"),
        # [verl] is checked whenever fulmen-verl is installed, even for a local run
        ({"verl": {"n_gpu_per_node": 1}}, r"\[verl\] n_gpu_per_node: unknown key. Did you mean 'n_gpus_per_node'"),
        ({"backend": "verl", "verl": {"gpu_memory_utilization": float("nan")}}, r"gpu_memory_utilization: expected a finite"),
        ({"backend": "verl", "verl": {"nnodes": 0}}, r"\[verl\] nnodes = 0: must be at least 1"),
    ],
)
def test_backend_tables_are_checked_at_load(patch: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({**MINIMAL, **patch}, source="x.toml")


@pytest.mark.parametrize(
    ("lora", "expected"),
    [
        (True, LoraSettings()),
        (False, None),
        ({"target_modules": "q_proj", "alpha": 8}, LoraSettings(alpha=8.0, target_modules=("q_proj",))),
    ],
)
def test_local_lora_shorthands(lora: object, expected: LoraSettings | None) -> None:
    config = parse_config({**MINIMAL, "local": {"lora": lora}})
    assert config.backend_sections["local"].lora == expected
    # what the embedded backend's code calls gives the same object
    assert parse_local_settings(config.backend_options["local"], source=config.source) == (
        config.backend_sections["local"]
    )


def test_verl_run_gets_its_typed_section() -> None:
    config = parse_config({**MINIMAL, "backend": "verl", "verl": {"nnodes": 2, "overrides": ["a=b"]}})
    assert config.backend_sections["verl"] == VerlConfig(nnodes=2, overrides=("a=b",))
    assert "local" not in config.backend_sections  # not chosen, no table


def test_table_of_a_backend_not_installed_is_kept_with_a_warning() -> None:
    with pytest.warns(ConfigWarning, match=r"\[tpu_farm\] is not checked: no installed backend"):
        config = parse_config({**MINIMAL, "tpu_farm": {"pods": 4}})
    assert config.backend_options["tpu_farm"] == {"pods": 4}
    # a backend that is not installed: the config still loads (fulmen train names the install)
    config = parse_config({**MINIMAL, "backend": "tpu_farm"})
    assert config.backend == "tpu_farm" and config.backend_sections == {}


@dataclass(frozen=True, slots=True, kw_only=True)
class ToySettings:
    pods: int = 1
    rate: float = 0.5


def parse_toy(table: Mapping[str, Any], *, source: str) -> ToySettings:
    return build(ToySettings, table, where=f"{source}: [toy]")


def test_sections_passed_explicitly_replace_discovery() -> None:
    toy = {"toy": BackendSection("toy", parse_toy)}
    config = parse_config({**MINIMAL, "backend": "toy", "toy": {"pods": 3}}, backends=toy)
    assert config.backend_sections == {"toy": ToySettings(pods=3)}
    with pytest.raises(ConfigError, match=r"\[toy\] pdos: unknown key. Did you mean 'pods'\?"):
        parse_config({**MINIMAL, "toy": {"pdos": 3}}, backends=toy)


@pytest.fixture
def toy_backend_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A third backend installed the way any package is: a distribution with a
    ``fulmen.backends`` entry point whose class declares ``[toy]``."""
    (tmp_path / "toy_backend.py").write_text(
        textwrap.dedent(
            """
            from dataclasses import dataclass
            from fulmen.backend_config import BackendSection
            from fulmen.validation import build

            @dataclass(frozen=True)
            class ToySettings:
                pods: int = 1

            def parse(table, *, source):
                return build(ToySettings, table, where=f"{source}: [toy]")

            class ToyBackend:
                config_section = BackendSection("toy", parse)
                def train(self, config_path, *, resume=False): return 0
                def evaluate(self, config_path, *, checkpoint=None): return 0
            """
        )
    )
    info = tmp_path / "toy_backend-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-backend\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[fulmen.backends]\ntoy = toy_backend:ToyBackend\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    installed_backend_sections.cache_clear()
    yield
    installed_backend_sections.cache_clear()
    sys.modules.pop("toy_backend", None)


@pytest.mark.usefixtures("toy_backend_installed")
def test_a_third_backend_declares_its_table_without_a_change_in_core() -> None:
    assert set(installed_backend_sections()) >= {"local", "verl", "toy"}
    config = parse_config({**MINIMAL, "backend": "toy", "toy": {"pods": 4}})
    assert config.backend_sections["toy"].pods == 4
    with pytest.raises(ConfigError, match=r"\[toy\] pods: expected an integer, got 'many'"):
        parse_config({**MINIMAL, "backend": "toy", "toy": {"pods": "many"}})


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


@pytest.mark.parametrize("path", sorted(Path(__file__).parents[2].glob("examples/*/*.toml")), ids=str)
def test_every_example_config_loads(path: Path) -> None:
    config = load_config(path, base_dir=path.parents[2])
    assert config.backend in config.backend_sections


def test_gateway_table() -> None:
    assert parse_config(MINIMAL).gateway.continuity is False
    config = parse_config({**MINIMAL, "gateway": {"continuity": True, "tool_parser": "llama3_json"}})
    assert config.gateway.continuity and config.gateway.tool_parser == "llama3_json"
    with pytest.raises(ConfigError, match="continuity"):
        parse_config({**MINIMAL, "gateway": {"continuty": True}})
