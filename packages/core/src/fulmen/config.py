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

Sections a backend owns (``[local]``, ``[verl]``) are kept as raw tables in
:attr:`TrainConfig.backend_options` for that backend to validate.
"""

from __future__ import annotations

import tomllib
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from fulmen.observe.alarms import AlarmThresholds

__all__ = [
    "AgentConfig",
    "BatchConfig",
    "ConfigError",
    "CreditConfig",
    "DataConfig",
    "ModelConfig",
    "RunConfig",
    "TrainConfig",
    "TrainingConfig",
    "load_config",
    "parse_config",
]


class ConfigError(ValueError):
    """The config file is invalid; the message names the key, the problem and the fix."""


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


@dataclass(frozen=True, slots=True, kw_only=True)
class CreditConfig:
    """``[credit]``: the credit assigner, by name, and its options."""

    assigner: str = "grpo"
    """``grpo``, ``turn_grpo``, ``gigpo``, ``broadcast``, ``discounted``... (see docs/credit.md)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Assigner options (validated by the assigner)."""


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
class TrainConfig:
    """A whole config file."""

    agent: AgentConfig
    data: DataConfig
    model: ModelConfig
    backend: str = "local"
    """Training backend (``local`` or ``verl``)."""
    run: RunConfig = field(default_factory=RunConfig)
    train: TrainingConfig = field(default_factory=TrainingConfig)
    credit: CreditConfig = field(default_factory=CreditConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    alarms: AlarmThresholds = field(default_factory=AlarmThresholds)
    """``[alarms]``: when training alarms fire (see :mod:`fulmen.observe.alarms`)."""
    backend_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Raw tables owned by backends (``[local]``, ``[verl]``)."""
    base_dir: str = "."
    """Directory relative paths in the config are resolved against (the config's folder)."""

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
    "alarms": AlarmThresholds,
}
_BACKEND_SECTIONS = ("local", "verl")


def load_config(path: str | Path, *, base_dir: str | Path | None = None) -> TrainConfig:
    """Read and validate a TOML config file.

    ``base_dir`` (default: the current directory) anchors relative paths and module imports:
    configs are meant to be run from the project's root, as the README shows.

    Raises:
        ConfigError: unreadable file, bad TOML, unknown key, wrong type or missing key.
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config {str(path)!r}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    return parse_config(raw, source=str(path), base_dir=str(base_dir or Path.cwd()))


def parse_config(raw: dict[str, Any], *, source: str = "config", base_dir: str = ".") -> TrainConfig:
    """Validate an already-parsed config table. See :func:`load_config`."""
    allowed = {*_SECTIONS, "credit", "backend", *_BACKEND_SECTIONS}
    for key in raw:
        if key not in allowed:
            raise ConfigError(_unknown(source, key, sorted(allowed)))
    kwargs: dict[str, Any] = {"base_dir": base_dir}
    for name, cls in _SECTIONS.items():
        table = raw.get(name)
        if table is None:
            continue
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: [{name}] must be a table, got {type(table).__name__}")
        kwargs[name] = _build(cls, table, f"{source}: [{name}]")
    for name in ("agent", "data", "model"):
        if name not in kwargs:
            required = [f.name for f in fields(_SECTIONS[name]) if f.default is MISSING and f.default_factory is MISSING]
            raise ConfigError(f"{source}: missing section [{name}] (it needs: {', '.join(required)})")
    credit = raw.get("credit", {})
    if not isinstance(credit, dict):
        raise ConfigError(f"{source}: [credit] must be a table")
    assigner = credit.get("assigner", "grpo")
    if not isinstance(assigner, str):
        raise ConfigError(f"{source}: [credit] assigner: expected a string, got {assigner!r}")
    kwargs["credit"] = CreditConfig(
        assigner=assigner, options={k: v for k, v in credit.items() if k != "assigner"}
    )
    backend = raw.get("backend", "local")
    if not isinstance(backend, str):
        raise ConfigError(f"{source}: backend: expected a string such as \"local\", got {backend!r}")
    kwargs["backend"] = backend
    kwargs["backend_options"] = {k: dict(raw[k]) for k in _BACKEND_SECTIONS if k in raw}
    config = TrainConfig(**kwargs)
    _check_ranges(config, source)
    return config


def _check_ranges(config: TrainConfig, source: str) -> None:
    t = config.train
    positive = {
        "steps": t.steps, "tasks_per_step": t.tasks_per_step, "group_size": t.group_size,
        "micro_batch_size": t.micro_batch_size, "max_tokens": t.max_tokens,
        "checkpoint_every": t.checkpoint_every,
    }
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{source}: [train] {key} = {value}: must be at least 1")
    if t.learning_rate <= 0:
        raise ConfigError(f"{source}: [train] learning_rate = {t.learning_rate}: must be > 0")
    if t.temperature < 0:
        raise ConfigError(f"{source}: [train] temperature = {t.temperature}: must be >= 0")
    if config.agent.concurrency < 1 or config.agent.max_attempts < 1:
        raise ConfigError(f"{source}: [agent] concurrency and max_attempts must be at least 1")


def _unknown(where: str, key: str, allowed: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"{where}: unknown key {key!r}.{hint} Allowed: {', '.join(allowed)}."


def _build(cls: type, table: dict[str, Any], where: str) -> Any:
    hints = get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    for key in table:
        if key not in known:
            raise ConfigError(_unknown(where, key, sorted(known)))
    kwargs: dict[str, Any] = {}
    for name, f in known.items():
        if name not in table:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ConfigError(f"{where}: missing key {name!r} ({_doc(cls, name)})")
            continue
        kwargs[name] = _check(table[name], hints[name], f"{where} {name}")
    try:
        return cls(**kwargs)
    except ValueError as exc:  # sections that check their own values ([alarms])
        raise ConfigError(f"{where}: {exc}") from exc


def _doc(cls: type, name: str) -> str:
    tp = get_type_hints(cls)[name]
    return f"expected {_describe(tp)}"


def _describe(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " or ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _check(value: Any, tp: Any, where: str) -> Any:
    origin = get_origin(tp)
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{where} = {value!r}: expected {_describe(tp)}")
        return value
    args = get_args(tp)
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{where} = {value!r}: expected a list of {_describe(args[0])}")
        items = tuple(_check(v, args[0], where) for v in value)
        if len(set(items)) != len(items):
            raise ConfigError(f"{where} = {value!r}: each entry at most once")
        return items
    if args and type(None) in args:
        inner = next(a for a in args if a is not type(None))
        return _check(value, inner, where)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where} = {value!r}: expected a number")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} = {value!r}: expected an integer")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} = {value!r}: expected a string")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} = {value!r}: expected true or false")
        return value
    return value
