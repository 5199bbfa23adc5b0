"""The ``[verl]`` config section (:class:`VerlConfig`) and its one mapping to verl's Hydra config.

:func:`to_hydra_overrides` is the only place in fulmen where verl's dotted keys exist: it
turns the fulmen config (``[model]``, ``[train]``, ``[batch]``, ``[run]``) plus ``[verl]``
into overrides of verl 0.9.1's own ``ppo_trainer.yaml``. :func:`compose_verl_config` composes
them with Hydra and :func:`check_verl_config` runs verl's own validation (``validate_config``
and the ``FSDPActorConfig`` / ``RolloutConfig`` dataclasses) on the result. All of this works
on a machine without a GPU; only the first import of verl is slow (~30 s).

Example::

    [verl]
    n_gpus_per_node = 1
    gpu_memory_utilization = 0.4
    rollout_correction = "bypass"     # PPO ratio against the exact rollout logprobs
    rollout_is = "token"              # truncated importance sampling (TIS)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from fulmen.config import ConfigError, TrainConfig
from fulmen.validation import build

if TYPE_CHECKING:
    from omegaconf import DictConfig

__all__ = [
    "LossAggMode",
    "OldLogprobMode",
    "VerlConfig",
    "advertised_url",
    "check_verl_config",
    "check_verl_policies",
    "compose_verl_config",
    "is_loopback",
    "is_wildcard",
    "parse_verl_options",
    "to_hydra_overrides",
]

LossAggMode = Literal[
    "token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"
]
"""verl's ``actor.loss_agg_mode``: how per-token losses become one number."""

OldLogprobMode = Literal["bypass", "recompute"]
"""Where the PPO ratio's denominator comes from: ``bypass`` uses the exact rollout logprobs
recorded by the gateway (verl's ``rollout_correction.bypass_mode``, no extra forward pass);
``recompute`` runs the trainer's forward pass for ``old_log_probs`` and corrects the
rollout/trainer mismatch with importance weights from the recorded logprobs."""


@dataclass(frozen=True, slots=True, kw_only=True)
class VerlConfig:
    """``[verl]``: the distributed backend's own settings (everything else comes from the
    shared sections; see the package README for the full mapping)."""

    n_gpus_per_node: int = 1
    """GPUs per node used by the trainer and, colocated, by vLLM (verl ``trainer.n_gpus_per_node``)."""
    nnodes: int = 1
    """Nodes of the Ray cluster (verl ``trainer.nnodes``)."""
    ray_address: str | None = None
    """Ray cluster to join (``"auto"`` on a node of a started cluster); None starts a local one."""
    strategy: Literal["fsdp", "fsdp2"] = "fsdp2"
    """verl's training engine."""
    tensor_parallel_size: int = 1
    """vLLM tensor parallelism per replica; replicas = total GPUs / this."""
    gpu_memory_utilization: float = 0.5
    """Fraction of GPU memory vLLM may take (the trainer shares the GPU while vLLM sleeps)."""
    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    """Rollout dtype."""
    enforce_eager: bool = False
    """Disable CUDA graphs in vLLM (faster start, slower decode)."""
    tool_call_parser: str | None = "hermes"
    """vLLM ``--tool-call-parser`` (with ``--enable-auto-tool-choice``); None: no tool parsing."""
    max_tokens_per_gpu: int = 16384
    """Token budget of one forward/backward micro-batch per GPU (verl dynamic batch size)."""
    num_mini_batches: int = 1
    """Optimizer steps per training step; the step's rows are split evenly (1: on-policy)."""
    ppo_epochs: int = 1
    """Passes over the step's rows."""
    loss_agg_mode: LossAggMode = "token-mean"
    """verl's loss aggregation."""
    old_logprobs: OldLogprobMode = "bypass"
    """See :data:`OldLogprobMode`."""
    rollout_is: Literal["token", "sequence"] | None = "token"
    """Importance-sampling correction level (verl ``rollout_correction.rollout_is``); None: off."""
    rollout_is_threshold: float = 2.0
    """Upper truncation of the importance weights (TIS)."""
    rollout_rs: str | None = None
    """verl rejection-sampling mode (``rollout_correction.rollout_rs``); None: off."""
    rollout_rs_threshold: float | None = None
    """Threshold of ``rollout_rs``."""
    param_offload: bool = False
    """Offload FSDP parameters to CPU between uses."""
    optimizer_offload: bool = False
    """Offload optimizer state to CPU between uses."""
    gradient_checkpointing: bool = True
    """Activation checkpointing in the actor."""
    device: Literal["cuda", "cpu"] = "cuda"
    """Where verl's workers run (verl ``trainer.device``): ``cuda`` GPUs, or ``cpu`` (verl's
    FSDP actor over gloo and vLLM's CPU build, through :mod:`fulmen_verl.cpu_platform`; needs
    the environment of ``scripts/verl_cpu_env.sh``; "GPUs" are then CPU worker slots)."""
    gateway_host: str = "127.0.0.1"
    """Interface the gateway binds (``0.0.0.0`` when runners on other machines reach it)."""
    gateway_port: int = 0
    """Port of the gateway (0: any free port)."""
    gateway_advertise: str | None = None
    """Address runners on other nodes use to reach the gateway: a host (``10.0.0.5``) or a URL
    (``http://head:8400``); without a port, the gateway's own. None: ``gateway_host``, or the
    head's Ray node address when ``gateway_host`` is a wildcard (``0.0.0.0``)."""
    ray_runners: int = 0
    """Run agent episodes in this many Ray actors (0: in the trainer process)."""
    ray_runner_resources: dict[str, float] = field(default_factory=dict[str, float])
    """Ray custom resources each runner actor asks for (``{ agents = 1 }`` puts the runners on
    the nodes started with ``ray start --resources '{"agents": N}'``)."""
    ship_code: bool = True
    """Ship ``[config]``'s project directory (the agent code, ``.gitignore`` honoured) and
    fulmen itself to the runner actors through Ray's runtime env, so nodes need only the
    third-party packages; false: every node must have both installed at the same paths."""
    overrides: tuple[str, ...] = ()
    """Extra raw Hydra overrides of verl's config, applied last (an escape hatch)."""

    def __post_init__(self) -> None:
        positive = {
            "n_gpus_per_node": self.n_gpus_per_node,
            "nnodes": self.nnodes,
            "tensor_parallel_size": self.tensor_parallel_size,
            "max_tokens_per_gpu": self.max_tokens_per_gpu,
            "num_mini_batches": self.num_mini_batches,
            "ppo_epochs": self.ppo_epochs,
        }
        for key, value in positive.items():
            if value < 1:
                raise ValueError(f"{key} = {value}: must be at least 1")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(
                f"gpu_memory_utilization = {self.gpu_memory_utilization}: must be in (0, 1]"
            )
        if (self.n_gpus_per_node * self.nnodes) % self.tensor_parallel_size:
            raise ValueError(
                f"tensor_parallel_size = {self.tensor_parallel_size} must divide the GPU count "
                f"({self.n_gpus_per_node} x {self.nnodes})"
            )
        if self.rollout_is_threshold <= 1:
            raise ValueError(f"rollout_is_threshold = {self.rollout_is_threshold}: must be > 1")
        if self.ray_runners < 0 or not 0 <= self.gateway_port < 65536:
            raise ValueError("ray_runners must be >= 0 and gateway_port in [0, 65535]")
        for name, amount in self.ray_runner_resources.items():
            if amount <= 0:
                raise ValueError(f"ray_runner_resources.{name} = {amount}: must be > 0")
        if self.gateway_advertise is not None:
            advertised_url(self.gateway_advertise, port=1)  # raises on a bad address

    @property
    def total_gpus(self) -> int:
        """GPUs of the whole job."""
        return self.n_gpus_per_node * self.nnodes


_WILDCARDS = frozenset({"0.0.0.0", "::", "[::]", ""})
"""Bind-anything addresses: fine to listen on, meaningless to connect to."""


def advertised_url(address: str, *, port: int) -> str:
    """``http(s)://host:port[/path]`` from a ``gateway_advertise`` value (a host, or a URL with
    or without a port); ``port`` fills a missing port.

    Raises:
        ValueError: not a host or an http(s) URL, or a wildcard host (``0.0.0.0``, ``::``),
            which no other machine can connect to.
    """
    text = address.strip().rstrip("/")
    url = text if "://" in text else f"http://{text}"
    parts = urlsplit(url)
    try:
        given = parts.port
    except ValueError:
        given = -1
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or given == -1 or parts.query or parts.fragment:
        raise ValueError(
            f'gateway_advertise = "{address}": expected a host ("10.0.0.5") or an http:// URL '
            '("http://head-node:8400")'
        )
    if host in _WILDCARDS:
        raise ValueError(
            f'gateway_advertise = "{address}": {host or "an empty host"} is a bind-anything '
            "address other nodes cannot connect to; advertise the head node's IP or hostname "
            '(e.g. "http://10.0.0.5"), and keep gateway_host = "0.0.0.0" to listen on every '
            "interface"
        )
    netloc = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{netloc}:{given or port}{parts.path}"


def is_wildcard(host: str) -> bool:
    """Whether ``host`` is a bind-anything address (``0.0.0.0``, ``::``)."""
    return host.strip() in _WILDCARDS


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (``127.x``, ``::1``, ``localhost``)."""
    name = host.strip().strip("[]").lower()
    return name == "localhost" or name.startswith("127.") or name == "::1"


def parse_verl_options(raw: Mapping[str, Any], *, source: str = "config") -> VerlConfig:
    """Validate the raw ``[verl]`` table (``TrainConfig.backend_options["verl"]``); the typed
    layer of :mod:`fulmen.validation` checks names and types, :class:`VerlConfig` the ranges.
    ``load_config`` already runs this (``VerlBackend.config_section``) and keeps the result in
    ``config.backend_sections["verl"]``.

    Raises:
        ConfigError: unknown key (with a suggestion), wrong type or out-of-range value.
    """
    return build(VerlConfig, raw, where=f"{source}: [verl]")


def _learning_rate(config: TrainConfig) -> float:
    """The one policy's own learning rate when it sets one, else ``[train] learning_rate``."""
    own = config.policies[0].learning_rate if config.policies else None
    return own if own is not None else config.train.learning_rate


def _fmt(value: object) -> str:
    """A Hydra override value: strings are always quoted, so paths and names stay strings."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{text}'"


def check_verl_policies(config: TrainConfig) -> None:
    """Refuse what verl cannot train: more than one ``[[policy]]``, or a policy with its own
    ``lora``.

    verl 0.9.1 trains one actor per run and serves it from vLLM with at most one LoRA adapter
    (its vLLM rollout server starts vLLM with ``max_loras = 1`` and sends every request with
    the one fixed ``LoRARequest``, ``VLLM_LORA_INT_ID = 123``, in
    ``verl/workers/rollout/vllm_rollout/vllm_async_server.py`` and ``utils.py``), so one run
    trains one policy. One ``[[policy]]`` is the ``[credit] agents`` case: its agents train,
    with its ``learning_rate``; the other agents are served by the same weights (not a frozen
    base: verl serves one model) and masked.

    Raises:
        ConfigError: more than one policy, or a policy that sets ``lora`` (fulmen's verl
            backend trains every weight).
    """
    policies = config.policies
    if len(policies) > 1:
        names = ", ".join(repr(p.name) for p in policies)
        raise ConfigError(
            f"{config.source}: {len(policies)} [[policy]] entries ({names}), but verl 0.9.1 "
            "trains one policy per run (one actor, served by vLLM with max_loras = 1); train "
            "several policies with --backend local, or keep one [[policy]]"
        )
    if policies and policies[0].lora is not None:
        raise ConfigError(
            f"{config.source}: [[policy]] {policies[0].name!r} sets lora, but fulmen's verl "
            "backend trains every weight of its one policy; remove lora, or use --backend local"
        )


def to_hydra_overrides(config: TrainConfig, verl: VerlConfig, *, model_path: str) -> list[str]:
    """Map the fulmen config onto verl's ``ppo_trainer`` Hydra config (the only such mapping).

    Args:
        config: the whole fulmen config (``[model]``, ``[train]``, ``[batch]``, ``[run]``).
        verl: the validated ``[verl]`` section.
        model_path: absolute directory of the base model (``[model] path`` resolved/built).

    Returns:
        Hydra override strings (``key=value``, ``+key=value`` for keys verl's YAML lacks),
        ending with ``verl.overrides`` verbatim.

    Batch sizing: verl's dataloader and ``rollout.n`` are not used (fulmen's runner makes the
    groups), so ``data.train_batch_size`` is ``tasks_per_step x group_size`` and ``rollout.n``
    is 1 only to satisfy verl's validation; each step trains on *all* its rows (see
    :mod:`fulmen_verl.dataproto`).
    """
    t = config.train
    out = config.resolve(config.run.output_dir)
    episodes = t.tasks_per_step * t.group_size
    ov: dict[str, object] = {
        # model
        "actor_rollout_ref.model.path": model_path,
        "actor_rollout_ref.model.use_remove_padding": True,
        "actor_rollout_ref.model.enable_gradient_checkpointing": verl.gradient_checkpointing,
        # actor (policy loss, optimizer, micro-batches)
        "actor_rollout_ref.actor.strategy": verl.strategy,
        "actor_rollout_ref.actor.optim.lr": _learning_rate(config),
        "actor_rollout_ref.actor.optim.weight_decay": t.weight_decay,
        "actor_rollout_ref.actor.optim.clip_grad": t.grad_clip,
        "actor_rollout_ref.actor.grad_clip": t.grad_clip,
        "actor_rollout_ref.actor.clip_ratio": t.clip_eps,
        "actor_rollout_ref.actor.clip_ratio_low": t.clip_eps,
        "actor_rollout_ref.actor.clip_ratio_high": t.clip_eps,
        "actor_rollout_ref.actor.use_kl_loss": t.kl_coef > 0,
        "actor_rollout_ref.actor.kl_loss_coef": t.kl_coef,
        "actor_rollout_ref.actor.kl_loss_type": "low_var_kl",
        "actor_rollout_ref.actor.loss_agg_mode": verl.loss_agg_mode,
        "actor_rollout_ref.actor.ppo_epochs": verl.ppo_epochs,
        "actor_rollout_ref.actor.ppo_mini_batch_size": episodes,
        "actor_rollout_ref.actor.use_dynamic_bsz": True,
        "actor_rollout_ref.actor.ppo_max_token_len_per_gpu": verl.max_tokens_per_gpu,
        "actor_rollout_ref.actor.data_loader_seed": config.run.seed,
        "actor_rollout_ref.actor.fsdp_config.param_offload": verl.param_offload,
        "actor_rollout_ref.actor.fsdp_config.optimizer_offload": verl.optimizer_offload,
        "actor_rollout_ref.ref.fsdp_config.param_offload": verl.param_offload,
        # rollout (vLLM behind fulmen's gateway)
        "actor_rollout_ref.rollout.name": "vllm",
        "actor_rollout_ref.rollout.mode": "async",
        "actor_rollout_ref.rollout.n": 1,
        "actor_rollout_ref.rollout.temperature": t.temperature,
        "actor_rollout_ref.rollout.seed": config.run.seed,
        "actor_rollout_ref.rollout.tensor_model_parallel_size": verl.tensor_parallel_size,
        "actor_rollout_ref.rollout.gpu_memory_utilization": verl.gpu_memory_utilization,
        "actor_rollout_ref.rollout.dtype": verl.dtype,
        "actor_rollout_ref.rollout.enforce_eager": verl.enforce_eager,
        "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu": verl.max_tokens_per_gpu,
        "+actor_rollout_ref.rollout.engine_kwargs.vllm.served_model_name": config.model.name,
        "data.max_response_length": t.max_tokens,
        "data.train_batch_size": episodes,
        # algorithm: advantages come from fulmen's credit assigner; rollout correction from verl
        "algorithm.adv_estimator": "grpo",
        "critic.enable": False,
        "algorithm.rollout_correction.bypass_mode": verl.old_logprobs == "bypass",
        "algorithm.rollout_correction.rollout_is": verl.rollout_is,
        "algorithm.rollout_correction.rollout_is_threshold": verl.rollout_is_threshold,
        "algorithm.rollout_correction.rollout_rs": verl.rollout_rs,
        "algorithm.rollout_correction.rollout_rs_threshold": verl.rollout_rs_threshold,
        # trainer / cluster
        "trainer.device": verl.device,
        "trainer.n_gpus_per_node": verl.n_gpus_per_node,
        "trainer.nnodes": verl.nnodes,
        "trainer.total_training_steps": t.steps,
        "trainer.total_epochs": 1,
        "trainer.save_freq": t.checkpoint_every,
        "trainer.test_freq": -1,
        "trainer.val_before_train": False,
        "trainer.resume_mode": "auto",
        "trainer.balance_batch": True,
        "trainer.logger": "['console']",
        "trainer.project_name": "fulmen",
        "trainer.experiment_name": config.run.name,
        "trainer.default_local_dir": str(out / "checkpoints"),
    }
    if verl.tool_call_parser is not None:
        ov["+actor_rollout_ref.rollout.engine_kwargs.vllm.enable_auto_tool_choice"] = True
        ov["+actor_rollout_ref.rollout.engine_kwargs.vllm.tool_call_parser"] = verl.tool_call_parser
    if verl.old_logprobs == "bypass":
        # the workers read the loss from their own copy of the actor config, made at start-up
        ov["actor_rollout_ref.actor.policy_loss.loss_mode"] = "bypass_mode"
        for key in (
            "bypass_mode",
            "rollout_is",
            "rollout_is_threshold",
            "rollout_rs",
            "rollout_rs_threshold",
        ):
            ov[f"+actor_rollout_ref.actor.policy_loss.rollout_correction.{key}"] = ov[
                f"algorithm.rollout_correction.{key}"
            ]
    if config.batch.max_len is not None:
        ov["actor_rollout_ref.rollout.max_model_len"] = config.batch.max_len
    if verl.device == "cpu":
        # no flash-attention: padded micro-batches with torch's SDPA; vLLM's CPU build has no
        # sleep mode (nothing to free: trainer and vLLM share RAM); no dataloader processes
        ov["actor_rollout_ref.model.use_remove_padding"] = False
        ov["+actor_rollout_ref.model.override_config.attn_implementation"] = "sdpa"
        ov["+actor_rollout_ref.rollout.enable_sleep_mode"] = False
        ov["actor_rollout_ref.rollout.free_cache_engine"] = False
        ov["data.dataloader_num_workers"] = 0
        # fulmen seeds every request, so vLLM keeps a torch.Generator per request; when chunked
        # prefill splits a prompt over two scheduler steps vLLM rewinds that generator's
        # offset, which a CPU generator refuses ("CPU Generator does not use offset") and the
        # engine dies. Whole prompts only (verl then raises max_num_batched_tokens to
        # max_model_len)
        ov["actor_rollout_ref.rollout.enable_chunked_prefill"] = False
        # the actor computes in float32 (verl's FSDP default is bf16 autocast, whose logprobs
        # differ from a float32 vLLM by ~0.02 on the tiny model)
        for role in ("actor", "ref"):
            ov[f"+actor_rollout_ref.{role}.fsdp_config.mixed_precision.param_dtype"] = "fp32"
        # verl's agent-loop and reward-loop workers are unused (fulmen's runner makes the
        # episodes, its credit assigners the advantages): one of each, not 8 processes
        ov["actor_rollout_ref.rollout.agent.num_workers"] = 1
        ov["reward.num_workers"] = 1
    lines = [
        f"{key}={value}" if key == "trainer.logger" else f"{key}={_fmt(value)}"
        for key, value in ov.items()
    ]
    return [*lines, *verl.overrides]


def compose_verl_config(overrides: list[str]) -> DictConfig:
    """verl 0.9.1's ``ppo_trainer`` config with ``overrides`` applied, resolved.

    Raises:
        ConfigError: an override names a key verl does not have, or has a bad value.
    """
    import os

    import verl
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    config_dir = os.path.join(os.path.dirname(str(verl.__file__)), "trainer", "config")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=config_dir, version_base=None):
            cfg = compose(config_name="ppo_trainer", overrides=overrides)
        OmegaConf.resolve(cfg)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(f"[verl] verl rejected the config overrides: {exc}") from None
    finally:
        GlobalHydra.instance().clear()
    return cfg


def check_verl_config(cfg: DictConfig) -> None:
    """Run verl's own config validation (``validate_config``: actor, rollout, algorithm and
    batch-size checks) on a composed config. Needs no GPU.

    Raises:
        ConfigError: verl rejects the config; the message is verl's.
    """
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import omega_conf_to_dataclass, validate_config

    try:
        validate_config(
            config=cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg)
        )
        omega_conf_to_dataclass(cfg.actor_rollout_ref.rollout)
        omega_conf_to_dataclass(cfg.algorithm)
    except (AssertionError, ValueError, TypeError) as exc:
        raise ConfigError(f"[verl] verl rejected the composed config: {exc}") from None
    except Exception as exc:  # hydra's InstantiationException wraps the dataclass checks
        raise ConfigError(f"[verl] verl rejected the composed config: {exc}") from None
