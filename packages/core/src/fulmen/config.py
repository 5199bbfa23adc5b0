"""The training config file (TOML): typed, validated, with errors that name the fix.

Example (``examples/calculator/train.toml`` is a complete one)::

    backend = "local"

    [run]
    output_dir = "runs/calculator"
    seed = 0

    [agent]
    entry = "examples.calculator.agent:solve"     # agent(task, ctx), sync or async
    reward = "examples.calculator.agent:reward"   # reward_fn(task, output, ctx) -> float

    [data]
    train = "examples.calculator.agent:train_tasks"   # () -> list of Task or dicts
    eval = "examples.calculator.agent:eval_tasks"

    [model]
    path = "runs/calculator/base"

    [train]
    steps = 20
    tasks_per_step = 16
    group_size = 8
    learning_rate = 1e-4

    [credit]
    assigner = "grpo"

**Every table is validated before anything starts**, by its owner's typed class (through
:mod:`fulmen.validation`): core's sections here; ``[credit]`` by the chosen assigner's fields
(:mod:`fulmen.credit.config`); a backend's table (``[local]``, ``[verl]``...) by the
:class:`~fulmen.backend_config.BackendSection` its ``fulmen.backends`` entry point declares,
so a new backend needs no change here. A typo in any table is an error with a did-you-mean.

Tables of backends: the table of every *installed* backend is validated when present (and the
chosen backend's is parsed, defaults included, even when absent); the typed result is in
:attr:`TrainConfig.backend_sections`, the raw table in :attr:`TrainConfig.backend_options`. A
table no installed backend declares (a config written for a backend this machine lacks) is kept
raw with a :class:`~fulmen.errors.ConfigWarning`, unless its name is close to a known table,
which is taken for a typo (an error). Likewise ``backend = NAME`` naming no installed backend
is an error when close to an installed name, and otherwise left to ``fulmen train`` (which
fails naming the package to install): a config may be read where its backend is absent.
"""

from __future__ import annotations

import tomllib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fulmen.backend_config import BackendSection, installed_backend_sections
from fulmen.errors import ConfigError, ConfigWarning
from fulmen.observe.alarms import AlarmThresholds
from fulmen.policies import PolicyConfig, check_policies, lora_table
from fulmen.validation import build, did_you_mean, field_types, unknown_key

__all__ = [
    "AgentConfig",
    "BatchConfig",
    "ConfigError",
    "CreditConfig",
    "DataConfig",
    "GatewayConfig",
    "ModelConfig",
    "PolicyConfig",
    "RunConfig",
    "TrainConfig",
    "TrainingConfig",
    "load_config",
    "parse_config",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunConfig:
    """``[run]``: where outputs go and the seed."""

    output_dir: str = "runs/default"
    """Directory for checkpoints, metrics (JSONL, TensorBoard), the curve PNG and the store."""
    seed: int = 0
    """Seed of every random choice (data order, sampling, initialisation)."""
    name: str = "fulmen"
    """Name shown in logs."""
    trackers: tuple[Literal["wandb", "mlflow"], ...] = ()
    """Experiment trackers that also receive the metrics (TensorBoard and ``metrics.jsonl``
    always do): ``"wandb"`` (``pip install wandb``), ``"mlflow"`` (``pip install mlflow``)."""

    def __post_init__(self) -> None:
        if len(set(self.trackers)) != len(self.trackers):
            raise ValueError(f"trackers = {list(self.trackers)!r}: each entry at most once")


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentConfig:
    """``[agent]``: the user's agent and reward."""

    entry: str
    """``module:function`` of the agent, ``agent(task, ctx)``."""
    reward: str | None = None
    """``module:function`` of ``reward_fn(task, output, ctx)``; None when the agent calls
    ``fulmen.reward`` itself."""
    timeout_s: float = 120.0
    """Per-episode time limit."""
    max_attempts: int = 2
    """Attempts per episode slot (failures are retried, never scored)."""
    concurrency: int = 64
    """Episodes in flight at once."""

    def __post_init__(self) -> None:
        _at_least_one(concurrency=self.concurrency, max_attempts=self.max_attempts)


@dataclass(frozen=True, slots=True, kw_only=True)
class DataConfig:
    """``[data]``: where tasks come from (``module:function`` or a ``.jsonl`` path)."""

    train: str
    """Training tasks."""
    eval: str | None = None
    """Held-out tasks for evaluation (greedy decoding)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelConfig:
    """``[model]``: the policy."""

    path: str
    """Directory of a Hugging Face causal LM + tokenizer."""
    build: str | None = None
    """``module:function(path)`` that builds the model at ``path`` when it does not exist."""
    name: str = "policy"
    """Model name served on ``/v1/models``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainingConfig:
    """``[train]``: the GRPO loop."""

    steps: int = 20
    """Training steps."""
    tasks_per_step: int = 16
    """Distinct tasks per step."""
    group_size: int = 8
    """Episodes per task per step (the GRPO group)."""
    learning_rate: float = 1e-4
    """AdamW learning rate (Adam's first steps move every weight by about this much)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    clip_eps: float = 0.2
    """PPO clip range of the importance ratio."""
    kl_coef: float = 0.0
    """Coefficient of the KL penalty to the frozen reference (0: no reference model)."""
    grad_clip: float = 1.0
    """Gradient-norm clip."""
    micro_batch_size: int = 64
    """Rows per forward/backward pass."""
    temperature: float = 1.0
    """Sampling temperature of rollouts."""
    max_tokens: int = 128
    """Maximum tokens per LLM call."""
    eval_every: int = 5
    """Evaluate every this many steps (0: only at the start and the end)."""
    eval_size: int | None = None
    """Evaluate on at most this many eval tasks (None: all)."""
    checkpoint_every: int = 1
    """Save a checkpoint every this many steps."""

    def __post_init__(self) -> None:
        _at_least_one(
            steps=self.steps, tasks_per_step=self.tasks_per_step, group_size=self.group_size,
            micro_batch_size=self.micro_batch_size, max_tokens=self.max_tokens,
            checkpoint_every=self.checkpoint_every,
        )
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate = {self.learning_rate}: must be > 0")
        if self.temperature < 0:
            raise ValueError(f"temperature = {self.temperature}: must be >= 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class CreditConfig:
    """``[credit]``: the credit assigner, by name, and its options."""

    assigner: str = "grpo"
    """``grpo``, ``turn_grpo``, ``gigpo``, ``broadcast``, ``discounted``... (see docs/credit.md)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Assigner options as written (validated at load against the assigner's fields; build the
    assigner with :func:`fulmen.credit.assigner_from_config`)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchConfig:
    """``[batch]``: how credited transitions become rows."""

    mode: Literal["per_call", "merged"] = "per_call"
    """One row per LLM call (exact), or prefix-merged trajectories."""
    max_len: int | None = None
    """Maximum row length in tokens (None: the model's context)."""
    overlong: Literal["truncate", "drop"] = "truncate"
    """What to do with rows longer than ``max_len``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayConfig:
    """``[gateway]``: how the capture gateway serves rollouts (see ``docs/gateway.md``)."""

    continuity: bool = False
    """Exact-continuity mode: a call that extends the previous call of its episode and agent
    is served token-in, so tool turns merge into one exact row (``[batch] mode = "merged"``)."""
    tool_parser: str = "hermes"
    """With ``continuity``: the inference server's tool-call parser (vLLM's
    ``--tool-call-parser``: ``hermes``, ``llama3_json``, ``pythonic``, ``phi4_mini_json``,
    ``mistral``)."""
    strict_tools: bool = False
    """The server constrains every tool call (vLLM ``--tool-strict-level function|parameter``):
    tokens from a call's first tool-call marker on are recorded as constrained."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainConfig:
    """A whole config file."""

    agent: AgentConfig
    data: DataConfig
    model: ModelConfig
    backend: str = "local"
    """Training backend: the name of an installed ``fulmen.backends`` entry point (``local``,
    ``verl``...)."""
    run: RunConfig = field(default_factory=RunConfig)
    train: TrainingConfig = field(default_factory=TrainingConfig)
    credit: CreditConfig = field(default_factory=CreditConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    alarms: AlarmThresholds = field(default_factory=AlarmThresholds)
    """``[alarms]``: when training alarms fire (see :mod:`fulmen.observe.alarms`)."""
    policies: tuple[PolicyConfig, ...] = ()
    """``[[policy]]``: one LoRA adapter per entry on the shared base (see
    :mod:`fulmen.policies`); empty: one policy, trained on ``[credit] agents``."""
    backend_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Raw tables owned by backends (``[local]``, ``[verl]``...), as written; only the tables
    present in the file."""
    backend_sections: Mapping[str, Any] = field(default_factory=dict)
    """Typed, validated backend tables by table name (``config.backend_sections["local"]`` is a
    ``fulmen_local.settings.LocalSettings``): the chosen backend's (its defaults when the table
    is absent) and every other installed backend's table that is present."""
    base_dir: str = "."
    """Directory relative paths in the config are resolved against (the current directory
    when loaded with :func:`load_config`: configs are run from the project's root)."""
    source: str = "config"
    """Where the config came from (its path), for messages."""

    def resolve(self, path: str) -> Path:
        """``path`` made absolute against :attr:`base_dir`."""
        p = Path(path)
        return p if p.is_absolute() else Path(self.base_dir) / p


_SECTIONS: dict[str, type] = {
    "run": RunConfig,
    "agent": AgentConfig,
    "data": DataConfig,
    "model": ModelConfig,
    "train": TrainingConfig,
    "batch": BatchConfig,
    "gateway": GatewayConfig,
    "alarms": AlarmThresholds,
}
_REQUIRED = ("agent", "data", "model")
_TOP_LEVEL = (*_SECTIONS, "credit", "backend", "policy")


def load_config(
    path: str | Path,
    *,
    base_dir: str | Path | None = None,
    backends: Mapping[str, BackendSection] | None = None,
) -> TrainConfig:
    """Read and validate a TOML config file: every table, before anything starts.

    ``base_dir`` (default: the current directory) anchors relative paths and module imports:
    configs are meant to be run from the project's root, as the README shows. ``backends``
    (default: :func:`~fulmen.backend_config.installed_backend_sections`) are the backend
    tables known.

    Raises:
        ConfigError: unreadable file, bad TOML, unknown key or table (with a did-you-mean),
            wrong type, missing key, bad credit option or bad backend table.
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config {str(path)!r}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    return parse_config(
        raw, source=str(path), base_dir=str(base_dir or Path.cwd()), backends=backends
    )


def parse_config(
    raw: Mapping[str, Any],
    *,
    source: str = "config",
    base_dir: str = ".",
    backends: Mapping[str, BackendSection] | None = None,
) -> TrainConfig:
    """Validate an already-parsed config table. See :func:`load_config` and the module
    docstring (which tables are checked by whom)."""
    owned = dict(installed_backend_sections() if backends is None else backends)
    tables = {section.name: name for name, section in owned.items()}
    kwargs: dict[str, Any] = {"base_dir": base_dir, "source": source}
    unowned = _unowned_tables(raw, source, tables)
    for name, cls in _SECTIONS.items():
        if name in raw:
            kwargs[name] = build(cls, _table(raw, name, source), where=f"{source}: [{name}]")
    for name in _REQUIRED:
        if name not in kwargs:
            spec = field_types(_SECTIONS[name])
            needs = ", ".join(key for key, (_, required) in spec.items() if required)
            raise ConfigError(f"{source}: missing section [{name}] (it needs: {needs})")
    kwargs["credit"] = _credit(raw, source)
    kwargs["policies"] = _policies(raw, source, kwargs["model"].name, kwargs["credit"])
    backend = raw.get("backend", "local")
    if not isinstance(backend, str):
        raise ConfigError(f'{source}: backend: expected a string such as "local", got {backend!r}')
    _check_backend_name(backend, owned, source)
    kwargs["backend"] = backend
    options = {name: _table(raw, name, source) for name in tables if name in raw}
    kwargs["backend_options"] = {**unowned, **{k: dict(v) for k, v in options.items()}}
    kwargs["backend_sections"] = {
        section.name: section.parse(options.get(section.name, {}), source=source)
        for name, section in owned.items()
        if section.name in options or name == backend
    }
    return TrainConfig(**kwargs)


def _table(raw: Mapping[str, Any], name: str, source: str) -> Mapping[str, Any]:
    table = raw[name]
    if not isinstance(table, Mapping):
        raise ConfigError(
            f"{source}: [{name}] must be a table, got {table!r}; write it as [{name}] "
            "followed by key = value lines"
        )
    return table


def _unowned_tables(
    raw: Mapping[str, Any], source: str, tables: Mapping[str, str]
) -> dict[str, dict[str, Any]]:
    """Top-level tables nobody here declares, kept raw with a warning; raises for any other
    unknown top-level key and for a table named like a known one (a typo)."""
    known = [*_TOP_LEVEL, *tables]
    kept: dict[str, dict[str, Any]] = {}
    for key, value in raw.items():
        if key in known:
            continue
        tables_known = [k for k in known if k != "backend"]
        if not isinstance(value, Mapping) or did_you_mean(key, tables_known):
            raise ConfigError(unknown_key(f"{source}: {key}", key, known))
        have = ", ".join(sorted(tables.values())) or "none"
        warnings.warn(
            ConfigWarning(
                f"{source}: [{key}] is not checked: no installed backend declares it "
                f"(installed backends: {have}); kept as written for the backend that owns it"
            ),
            stacklevel=3,
        )
        kept[key] = dict(value)
    return kept


def _credit(raw: Mapping[str, Any], source: str) -> CreditConfig:
    """``[credit]``, with its options validated by the assigner they are for."""
    from fulmen.credit.config import assigner_from_config  # imports numpy: only when loading

    table = _table(raw, "credit", source) if "credit" in raw else {}
    assigner = table.get("assigner", "grpo")
    if not isinstance(assigner, str):
        raise ConfigError(f"{source}: [credit] assigner: expected a string, got {assigner!r}")
    options = {k: v for k, v in table.items() if k != "assigner"}
    assigner_from_config(assigner, options, where=f"{source}: [credit]")
    return CreditConfig(assigner=assigner, options=options)


def _policies(
    raw: Mapping[str, Any], source: str, base_name: str, credit: CreditConfig
) -> tuple[PolicyConfig, ...]:
    """``[[policy]]`` entries, each validated, then checked together."""
    entries = raw.get("policy", [])
    if isinstance(entries, Mapping) or not isinstance(entries, list):
        raise ConfigError(
            f"{source}: policy must be an array of tables: write each policy as [[policy]] "
            "followed by name = ..., agents = [...]"
        )
    out: list[PolicyConfig] = []
    for i, entry in enumerate(entries):
        where = f"{source}: [[policy]] #{i + 1}"
        if isinstance(entry, Mapping) and isinstance(entry.get("name"), str):
            where = f"{source}: [[policy]] {entry['name']!r}"
        if isinstance(entry, Mapping) and "lora" in entry:
            entry = {**entry, "lora": lora_table(entry["lora"], f"{where} lora")}
            if entry["lora"] is None:
                del entry["lora"]
        out.append(build(PolicyConfig, entry, where=where))
    check_policies(
        out, base_name=base_name, credit_agents=credit.options.get("agents"), where=source
    )
    return tuple(out)


def _check_backend_name(backend: str, owned: Mapping[str, BackendSection], source: str) -> None:
    """A name close to an installed backend's is a typo (an error); any other unknown name is
    left to ``fulmen train``, which names the package to install."""
    from fulmen.backend import available_backends

    installed = sorted({*available_backends(), *owned})
    hint = did_you_mean(backend, installed) if backend not in installed else ""
    if hint:
        raise ConfigError(
            f"{source}: backend = {backend!r}: no installed backend has that name "
            f"(installed: {', '.join(installed)}).{hint}"
        )


def _at_least_one(**values: int) -> None:
    for key, value in values.items():
        if value < 1:
            raise ValueError(f"{key} = {value}: must be at least 1")
