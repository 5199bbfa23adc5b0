"""The policy's two models: the one the trainer updates and the one the server generates with.

:func:`load_policy` builds both from ``[model] path`` (or a checkpoint) and the ``[local]``
settings:

* **full fine-tuning** — the trainer holds float32 master weights on the device and computes
  under ``torch.autocast`` in the serving dtype (bf16 on a GPU); the server holds its own copy
  in the serving dtype, and each step hot-swaps the full state dict (cast on copy).
* **LoRA** — the base is loaded once in the serving dtype and frozen; the trainer's adapters
  (float32) are optimised; the server's adapters sit on the same base tensors, and each step
  hot-swaps the adapters only. The KL reference is the base with adapters disabled.

The server never sees a half-updated model: it generates from its own copy until the swap.
"""

from __future__ import annotations

import copy
from collections.abc import Generator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from fulmen.config import ConfigError
from peft import PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from fulmen_local.model.load import load_causal_lm, resolve_device, resolve_dtype
from fulmen_local.model.lora import (
    adapter_weights,
    attach_lora,
    is_adapter_dir,
    load_adapter,
    serving_copy,
)
from fulmen_local.settings import LocalSettings

__all__ = ["PolicyModels", "load_policy"]


@dataclass(slots=True)
class PolicyModels:
    """The trained model, the served copy and what they share."""

    trainer: torch.nn.Module
    """Updated in place by the optimizer (a ``PeftModel`` when :attr:`lora`)."""
    serving: torch.nn.Module
    """The inference server's model (``eval()``, never trained)."""
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    dtype: torch.dtype
    """Serving dtype, and the trainer's autocast dtype when it is not float32."""
    lora: bool

    def weights_for_server(self) -> dict[str, torch.Tensor]:
        """What one hot swap copies into :attr:`serving`: the adapters, or every weight."""
        if self.lora:
            return adapter_weights(self.trainer)
        return {k: v.detach() for k, v in self.trainer.state_dict().items()}

    def autocast(self) -> Any:
        """Context for the trainer's forward passes (mixed precision when dtype is not fp32)."""
        if self.dtype is torch.float32:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """Parameters the optimizer updates."""
        return [p for p in self.trainer.parameters() if p.requires_grad]

    def reference(self) -> torch.nn.Module | None:
        """A frozen reference for the KL term when it needs its own weights (full fine-tuning):
        a copy in the serving dtype. None for LoRA, whose reference is :meth:`adapters_disabled`."""
        if self.lora:
            return None
        ref = copy.deepcopy(self.trainer).to(self.dtype)
        ref.requires_grad_(False)
        return ref.eval()

    @contextmanager
    def adapters_disabled(self) -> Generator[torch.nn.Module]:
        """The trainer's model with its adapters switched off (LoRA only): the base policy."""
        if not isinstance(self.trainer, PeftModel):
            raise TypeError("adapters_disabled needs a LoRA policy")
        with self.trainer.disable_adapter():
            yield self.trainer


def _place(model: PreTrainedModel, settings: LocalSettings) -> None:
    if settings.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False


def load_policy(
    source: str | Path,
    settings: LocalSettings,
    *,
    checkpoint: Path | None = None,
    for_training: bool = True,
) -> PolicyModels:
    """Load the policy from ``source`` (``[model] path``), resuming from ``checkpoint`` if given.

    ``checkpoint`` is a full model directory (full fine-tuning) or an adapter directory (LoRA).
    With ``for_training=False`` only the served model is built (evaluation).

    Raises:
        ConfigError: a bad ``[model]``/``[local]`` setting (see :mod:`fulmen_local.model.load`),
            or a checkpoint that does not match ``[local] lora``.
    """
    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    adapter = checkpoint is not None and is_adapter_dir(checkpoint)
    if checkpoint is not None and adapter != (settings.lora is not None) and for_training:
        which = "a LoRA adapter" if adapter else "a full model"
        raise ConfigError(
            f"{checkpoint} holds {which} but [local] lora is "
            f"{'unset' if adapter else 'set'}; resume with the settings the run was started with"
        )
    if settings.lora is not None or adapter:
        base, tokenizer = load_causal_lm(source, device=device, dtype=dtype)
        base.requires_grad_(False)
        if for_training:
            _place(base, settings)
        if adapter and checkpoint is not None:
            trainer: torch.nn.Module = load_adapter(base, checkpoint, trainable=for_training)
        elif settings.lora is not None:
            trainer = attach_lora(base, settings.lora)
        else:  # pragma: no cover - adapter or lora is true here
            raise AssertionError
        if not for_training:
            trainer.requires_grad_(False)
            return PolicyModels(trainer.eval(), trainer.eval(), tokenizer, device, dtype, True)
        return PolicyModels(trainer, serving_copy(trainer), tokenizer, device, dtype, True)
    model_source = checkpoint if checkpoint is not None else source
    if not for_training:
        served, tokenizer = load_causal_lm(model_source, device=device, dtype=dtype)
        served.requires_grad_(False)
        return PolicyModels(served, served, tokenizer, device, dtype, False)
    model, tokenizer = load_causal_lm(model_source, device=device, dtype=torch.float32)
    _place(model, settings)
    served = copy.deepcopy(model)
    served.to(dtype)  # pyright: ignore[reportArgumentType]  # nn.Module.to, in place
    served.eval()
    served.requires_grad_(False)
    return PolicyModels(model, served, tokenizer, device, dtype, False)
