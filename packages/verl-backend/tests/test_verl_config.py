"""``[verl]`` validation and the one mapping to verl's Hydra config."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from fulmen.config import ConfigError, load_config
from fulmen_verl.config import VerlConfig, advertised_url, parse_verl_options, to_hydra_overrides
from fulmen_verl.preflight import check_job

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "calculator" / "train_verl.toml"


def overrides_of(verl: VerlConfig) -> dict[str, str]:
    config = load_config(EXAMPLE, base_dir=ROOT)
    lines = to_hydra_overrides(config, verl, model_path="/models/m")
    return dict(line.split("=", 1) for line in lines)


def test_defaults_and_example_section_parse() -> None:
    assert parse_verl_options({}) == VerlConfig()
    config = load_config(EXAMPLE, base_dir=ROOT)
    verl = parse_verl_options(config.backend_options["verl"])
    assert verl.gpu_memory_utilization == 0.4
    assert verl.enforce_eager is True


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"n_gpu_per_node": 2}, "Did you mean 'n_gpus_per_node'"),
        ({"n_gpus_per_node": "2"}, "expected an integer"),
        ({"old_logprobs": "reuse"}, "expected 'bypass' or 'recompute', got 'reuse'"),
        ({"gpu_memory_utilization": 1.5}, "must be in (0, 1]"),
        ({"n_gpus_per_node": 2, "tensor_parallel_size": 4}, "must divide the GPU count"),
        ({"overrides": "a=b"}, "expected a list of strings"),
        ({"rollout_is_threshold": 1}, "must be > 1"),
    ],
)
def test_bad_verl_sections_name_the_problem(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match="verl") as err:
        parse_verl_options(raw, source="x.toml")
    assert message in str(err.value)


def test_mapping_carries_fulmen_settings_to_verl_keys() -> None:
    ov = overrides_of(VerlConfig(n_gpus_per_node=4, tensor_parallel_size=2, num_mini_batches=2))
    assert ov["actor_rollout_ref.model.path"] == "'/models/m'"
    assert ov["actor_rollout_ref.actor.optim.lr"] == "0.0001"
    assert ov["actor_rollout_ref.rollout.temperature"] == "1.0"
    assert ov["actor_rollout_ref.rollout.tensor_model_parallel_size"] == "2"
    assert ov["trainer.n_gpus_per_node"] == "4"
    assert ov["trainer.total_training_steps"] == "6"
    assert ov["data.max_response_length"] == "96"
    assert ov["+actor_rollout_ref.rollout.engine_kwargs.vllm.served_model_name"] == "'policy'"
    assert ov["+actor_rollout_ref.rollout.engine_kwargs.vllm.tool_call_parser"] == "'hermes'"
    # bypass mode reaches the workers' own loss config, not only the driver's
    assert ov["actor_rollout_ref.actor.policy_loss.loss_mode"] == "'bypass_mode'"
    assert ov["+actor_rollout_ref.actor.policy_loss.rollout_correction.rollout_is"] == "'token'"
    assert ov["actor_rollout_ref.actor.use_kl_loss"] == "false"


def test_recompute_mode_and_raw_overrides_come_last() -> None:
    config = load_config(EXAMPLE, base_dir=ROOT)
    verl = VerlConfig(
        old_logprobs="recompute", tool_call_parser=None, overrides=("trainer.nnodes=1",)
    )
    lines = to_hydra_overrides(config, verl, model_path="/m")
    assert lines[-1] == "trainer.nnodes=1"
    joined = "\n".join(lines)
    assert "policy_loss.loss_mode" not in joined
    assert "tool_call_parser" not in joined
    assert "algorithm.rollout_correction.bypass_mode=false" in lines


def test_strings_are_quoted_so_hydra_keeps_them_strings() -> None:
    config = load_config(EXAMPLE, base_dir=ROOT)
    lines = to_hydra_overrides(config, VerlConfig(), model_path="/a b/it's")
    assert "actor_rollout_ref.model.path='/a b/it\\'s'" in lines


@pytest.mark.slow
def test_verl_composes_and_validates_the_mapped_config() -> None:
    """verl's own Hydra config + ``validate_config`` accept the mapping (CPU; imports verl)."""
    from fulmen_verl.config import check_verl_config, compose_verl_config

    config = load_config(EXAMPLE, base_dir=ROOT)
    cfg = compose_verl_config(to_hydra_overrides(config, VerlConfig(), model_path="/m"))
    check_verl_config(cfg)
    assert cfg.actor_rollout_ref.actor.policy_loss.loss_mode == "bypass_mode"
    assert cfg.actor_rollout_ref.actor.policy_loss.rollout_correction.rollout_is == "token"
    assert cfg.actor_rollout_ref.rollout.engine_kwargs.vllm.served_model_name == "policy"
    assert cfg.actor_rollout_ref.actor.use_dynamic_bsz is True
    with pytest.raises(ConfigError, match="verl rejected"):
        compose_verl_config(["actor_rollout_ref.actor.no_such_key=1"])


def test_the_cpu_platform_never_splits_a_prompt_over_scheduler_steps() -> None:
    """vLLM's CPU engine died (``RuntimeError: CPU Generator does not use offset``) when
    chunked prefill split a seeded request's prompt: 128 concurrent prompts exceed one
    scheduler step's 8192 tokens (found by the calculator learning run). On the CPU platform
    the mapping turns chunked prefill off."""
    from fulmen_verl.config import compose_verl_config

    config = load_config(ROOT / "examples" / "calculator" / "train_verl_cpu.toml", base_dir=ROOT)
    raw = {k: v for k, v in config.backend_options["verl"].items() if k != "overrides"}
    verl = parse_verl_options(raw, source="cpu")
    cfg = compose_verl_config(to_hydra_overrides(config, verl, model_path="/m"))
    assert cfg.actor_rollout_ref.rollout.enable_chunked_prefill is False
    gpu = compose_verl_config(to_hydra_overrides(config, replace(verl, device="cuda"), model_path="/m"))
    assert gpu.actor_rollout_ref.rollout.enable_chunked_prefill is True


@pytest.mark.parametrize(
    "path", sorted(ROOT.glob("examples/*/train_verl.toml")), ids=lambda p: p.parent.name
)
def test_every_example_verl_config_validates_and_maps(path: Path) -> None:
    """The GPU configs the examples ship cannot run here; they must at least load, name a
    valid ``[verl]`` section and map to verl keys, so a GPU user's first error is not a typo."""
    config = load_config(path, base_dir=ROOT)
    assert config.backend == "verl"
    verl = parse_verl_options(config.backend_options["verl"], source=str(path))
    ov = dict(line.split("=", 1) for line in to_hydra_overrides(config, verl, model_path="/m"))
    assert ov["trainer.total_training_steps"] == str(config.train.steps)
    assert ov["data.max_response_length"] == str(config.train.max_tokens)
    check_job(config, verl, cuda_devices=lambda: verl.n_gpus_per_node)  # on its GPU machine


@pytest.mark.parametrize(
    ("address", "url"),
    [
        ("10.0.0.5", "http://10.0.0.5:8400"),
        ("http://head-node", "http://head-node:8400"),
        ("https://gw.example:443/fulmen/", "https://gw.example:443/fulmen"),
        ("[fd00::5]:9000", "http://[fd00::5]:9000"),
    ],
)
def test_advertised_address_becomes_a_url(address: str, url: str) -> None:
    assert advertised_url(address, port=8400) == url
    assert parse_verl_options({"gateway_advertise": address}).gateway_advertise == address


@pytest.mark.parametrize("address", ["0.0.0.0", "http://0.0.0.0:8400", "http://[::]:1", "ftp://h"])
def test_unusable_advertised_addresses_are_refused(address: str) -> None:
    with pytest.raises(ConfigError, match=r"x.toml: \[verl\] gateway_advertise = "):
        parse_verl_options({"gateway_advertise": address}, source="x.toml")


def test_one_policy_trains_its_agents_at_its_rate_and_lora_is_refused() -> None:
    from fulmen.config import parse_config
    from fulmen_verl.config import check_verl_policies

    policy: dict[str, object] = {"name": "solver", "agents": ["solver"], "learning_rate": 3e-6}
    raw: dict[str, object] = {
        "backend": "verl", "agent": {"entry": "a:b"}, "data": {"train": "a:t"},
        "model": {"path": "m"}, "train": {"learning_rate": 1e-4},
        "policy": [policy],
    }  # fmt: skip
    config = parse_config(raw, source="x.toml")
    check_verl_policies(config)
    ov = dict(o.split("=", 1) for o in to_hydra_overrides(config, VerlConfig(), model_path="/m"))
    assert float(ov["actor_rollout_ref.actor.optim.lr"]) == 3e-6
    policy["lora"] = {"rank": 8}
    with pytest.raises(ConfigError, match="'solver' sets lora, but fulmen's verl backend trains every weight"):
        check_verl_policies(parse_config(raw, source="x.toml"))
