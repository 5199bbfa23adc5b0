"""The ``[local]`` table of a training config: typed settings of the embedded backend.

Example::

    [local]
    threads = 2                  # torch CPU threads
    device = "auto"              # auto | cpu | cuda | cuda:N | mps  (auto: a GPU when present)
    dtype = "auto"               # auto | float32 | bfloat16 | float16  (auto: bf16 on GPU, fp32 on CPU)
    gradient_checkpointing = false
    tool_parser = "hermes"       # vLLM's --tool-call-parser names; default: the model family's
    max_batch_size = 128         # rows the inference server generates together
    micro_batch_tokens = 16384   # padded tokens per forward/backward pass of the trainer
    lora = { rank = 16, alpha = 32, dropout = 0.0, target_modules = "all-linear" }

Every key is optional. :func:`parse_local_settings` validates the raw table (unknown keys get a
did-you-mean) and raises :class:`fulmen.config.ConfigError` naming the key and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from fulmen.config import ConfigError, _build  # pyright: ignore[reportPrivateUsage]

__all__ = ["DTypeName", "LocalSettings", "LoraSettings", "parse_local_settings"]

DTypeName = Literal["auto", "float32", "bfloat16", "float16"]


@dataclass(frozen=True, slots=True, kw_only=True)
class LoraSettings:
    """``[local] lora``: train low-rank adapters (peft) instead of every weight."""

    rank: int = 16
    """Rank ``r`` of each adapter."""
    alpha: float = 32.0
    """Scale numerator: the adapter's output is multiplied by ``alpha / rank``."""
    dropout: float = 0.0
    """Dropout on the adapter's input during training."""
    target_modules: tuple[str, ...] = ("all-linear",)
    """Module names (suffixes) that get adapters; ``"all-linear"`` means every linear layer but
    the output head. A single string is accepted too."""

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"rank = {self.rank}: must be at least 1")
        if self.alpha <= 0:
            raise ValueError(f"alpha = {self.alpha}: must be > 0")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout = {self.dropout}: must be in [0, 1)")
        if not self.target_modules:
            raise ValueError('target_modules is empty: name modules, or use "all-linear"')


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalSettings:
    """``[local]``: how the embedded backend runs on this machine."""

    threads: int = 2
    """torch CPU threads (intra-op)."""
    device: str = "auto"
    """``auto`` (a CUDA GPU, else Apple's MPS, else the CPU), ``cpu``, ``cuda``, ``cuda:N`` or
    ``mps``."""
    dtype: DTypeName = "auto"
    """Weights' dtype for serving and training: ``auto`` is bfloat16 on a GPU, float32 on the CPU."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, about a third more compute)."""
    tool_parser: str | None = None
    """Tool-call format of the served model, named like vLLM's ``--tool-call-parser``; unset:
    the model family's default (``hermes`` for Qwen, ``llama3_json`` for Llama, …)."""
    max_batch_size: int = 128
    """Most sequences the inference server generates together."""
    micro_batch_tokens: int = 16384
    """Upper bound on ``rows x padded width`` of one trainer forward/backward pass."""
    lora: LoraSettings | None = None
    """Train LoRA adapters only (None: full fine-tuning)."""

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ValueError(f"threads = {self.threads}: must be at least 1")
        if self.max_batch_size < 1 or self.micro_batch_tokens < 1:
            raise ValueError("max_batch_size and micro_batch_tokens must be at least 1")
        base = self.device.split(":", 1)[0]
        if base not in ("auto", "cpu", "cuda", "mps") or (
            ":" in self.device and (base != "cuda" or not self.device.split(":", 1)[1].isdigit())
        ):
            raise ValueError(
                f'device = "{self.device}": expected "auto", "cpu", "cuda", "cuda:N" or "mps"'
            )


def parse_local_settings(table: dict[str, Any], *, source: str = "config") -> LocalSettings:
    """Validate the raw ``[local]`` table into :class:`LocalSettings`.

    Raises:
        ConfigError: an unknown key (with a did-you-mean), a value of the wrong type or range.
    """
    raw = dict(table)
    lora_raw = raw.pop("lora", None)
    lora: LoraSettings | None = None
    if lora_raw is not None:
        if lora_raw is False:
            lora_raw = None
        elif lora_raw is True:
            lora_raw = {}
        elif not isinstance(lora_raw, dict):
            raise ConfigError(
                f"{source}: [local] lora = {lora_raw!r}: expected a table, e.g. "
                "lora = { rank = 16, alpha = 32 }"
            )
    if isinstance(lora_raw, dict):
        lora_table: dict[str, Any] = dict(lora_raw)
        if isinstance(lora_table.get("target_modules"), str):
            lora_table["target_modules"] = [lora_table["target_modules"]]
        lora = _build(LoraSettings, lora_table, f"{source}: [local] lora")
    settings = _build(LocalSettings, raw, f"{source}: [local]")
    if lora is None:
        return settings
    return LocalSettings(
        threads=settings.threads, device=settings.device, dtype=settings.dtype,
        gradient_checkpointing=settings.gradient_checkpointing, tool_parser=settings.tool_parser,
        max_batch_size=settings.max_batch_size, micro_batch_tokens=settings.micro_batch_tokens,
        lora=lora,
    )
