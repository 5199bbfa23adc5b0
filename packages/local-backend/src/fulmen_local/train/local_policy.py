""":class:`LocalPolicy`: the embedded backend's :class:`~fulmen.train.policy.Policy`.

Three pieces that exist on their own, held together for the step driver:

* :class:`~fulmen_local.model.policy.PolicyModels` (:func:`~fulmen_local.model.policy.
  load_policy`): the trained model and the served copy on the chosen device and dtype, full
  fine-tuning or LoRA over a shared frozen base;
* :class:`~fulmen_local.grpo.updater.GRPOUpdater`: the GRPO optimizer step;
* :class:`~fulmen_local.server.InferenceServer`: the served copy behind vLLM's wire format,
  started in a thread; :meth:`LocalPolicy.publish` hot-swaps the trained weights into it (the
  adapters only, with LoRA).

A checkpoint directory holds what ``save_pretrained`` writes (a full model, or the adapter
only with LoRA: both load with ``from_pretrained`` / ``fulmen eval --checkpoint``) and
``trainer_state.pt`` (optimizer and random state).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from fulmen.config import ConfigError, TrainConfig
from fulmen.rows import TrainingRow
from fulmen_local.grpo.updater import GRPOConfig, GRPOUpdater
from fulmen_local.model.load import load_causal_lm
from fulmen_local.model.lora import is_adapter_dir
from fulmen_local.model.policy import PolicyModels, load_policy
from fulmen_local.server import InferenceServer
from fulmen_local.settings import LocalSettings
from fulmen_local.train.model_setup import (
    check_context,
    local_settings,
    policy_tool_parser,
    prepare_model,
)
from fulmen_local.train.token_view import TokenizerView
from fulmen_local.train.trainer_state import load_trainer_state, save_trainer_state
from peft import PeftModel, load_peft_weights, set_peft_model_state_dict

__all__ = ["LocalPolicy", "grpo_config"]

Log = Callable[[str], None]


def grpo_config(config: TrainConfig, local: LocalSettings) -> GRPOConfig:
    """The optimizer settings of ``[train]`` (and ``[local] micro_batch_tokens``)."""
    t = config.train
    return GRPOConfig(
        lr=t.learning_rate, weight_decay=t.weight_decay, clip_low=t.clip_eps,
        clip_high=t.clip_eps, kl_coef=t.kl_coef, max_grad_norm=t.grad_clip,
        micro_batch_tokens=local.micro_batch_tokens,
    )


def _pad_id(tokenizer: Any) -> int:
    pad = getattr(tokenizer, "pad_token_id", None)
    return pad if isinstance(pad, int) else 0


class LocalPolicy(TokenizerView):
    """A policy trained and served in this process (see the module docstring).

    Build it with :meth:`build` (or :meth:`from_config`): the server is running and serves
    version 0 when it returns. Close it when done.
    """

    def __init__(self, models: PolicyModels, updater: GRPOUpdater, server: InferenceServer) -> None:
        self.models = models
        self.updater = updater
        self.server = server
        self._closed = False

    @classmethod
    def build(
        cls,
        source: str | Path,
        local: LocalSettings,
        optim: GRPOConfig,
        *,
        model_name: str = "policy",
        max_tokens: int | None = None,
        log: Log = print,
    ) -> LocalPolicy:
        """Load ``source`` (a model directory or Hub id) for training with ``local``'s device,
        dtype and LoRA settings, and start serving it as ``model_name``.

        Raises:
            ConfigError: a bad ``[model]`` / ``[local]`` setting, a ``[local] tool_parser``
                that names no parser, or a ``max_tokens`` that does not fit the model's context.
        """
        models = load_policy(source, local)
        if max_tokens is not None:
            check_context(max_tokens, models, source)
        parser = policy_tool_parser(local, models)
        log(
            f"policy: {type(models.serving).__name__} on {models.device} ({models.dtype}, "
            f"{'LoRA' if models.lora else 'full fine-tuning'}; "
            f"{sum(p.numel() for p in models.trainable_parameters()):,} trained parameters)"
        )
        updater = GRPOUpdater(
            models.trainer,
            optim,
            pad_token_id=_pad_id(models.tokenizer),
            reference=models.reference() if optim.kl_coef > 0 else None,
            reference_context=models.adapters_disabled if models.lora else None,
            autocast_dtype=models.dtype,
        )
        server = InferenceServer(
            models.serving, models.tokenizer, model_name=model_name,
            max_batch_size=local.max_batch_size, policy_version=0, tool_parser=parser,
        )
        server.start_in_thread()
        return cls(models, updater, server)

    @classmethod
    def from_config(cls, config: TrainConfig, *, log: Log = print) -> LocalPolicy:
        """:meth:`build` for a training config: the base from ``[model]`` (built when
        missing), the settings from ``[local]`` and ``[train]``."""
        local = local_settings(config)
        return cls.build(
            prepare_model(config, log), local, grpo_config(config, local),
            model_name=config.model.name, max_tokens=config.train.max_tokens, log=log,
        )

    # ------------------------------------------------------------------ the Policy protocol

    def view_tokenizer(self) -> Any:
        """The served tokenizer (the drift checks' :class:`fulmen.drift.TokenView`)."""
        return self.models.tokenizer

    @property
    def upstream_url(self) -> str:
        """The inference server's base URL."""
        return self.server.url

    @property
    def version(self) -> int:
        """The version the server reports (``X-Fulmen-Policy-Version``)."""
        return self.server.policy_version

    def update(self, rows: Sequence[TrainingRow]) -> Mapping[str, float]:
        """One GRPO step (see :meth:`GRPOUpdater.update`); its metrics are schema keys."""
        return self.updater.update(rows)

    def publish(self, version: int) -> None:
        """Hot-swap the trained weights (the adapters, with LoRA) into the server."""
        self.server.update_weights(self.models.weights_for_server(), version=version)

    def save(self, directory: Path) -> None:
        """Model (or adapter) + tokenizer (``save_pretrained``) and ``trainer_state.pt``."""
        trainer: Any = self.models.trainer  # a PreTrainedModel or PeftModel
        trainer.save_pretrained(directory)
        self.models.tokenizer.save_pretrained(directory)
        save_trainer_state(directory, self.updater.optimizer)

    def load(self, directory: Path) -> None:
        """Restore weights (or adapters), optimizer and random state from :meth:`save`'s
        ``directory``; :meth:`publish` serves them.

        Raises:
            ConfigError: a LoRA checkpoint for a full fine-tuning policy or the reverse, or
                one whose shapes do not fit (other LoRA rank or model).
        """
        adapter = is_adapter_dir(directory)
        if adapter != self.models.lora:
            which = "a LoRA adapter" if adapter else "a full model"
            raise ConfigError(
                f"{directory} holds {which} but [local] lora is "
                f"{'unset' if adapter else 'set'}; resume with the settings the run was started with"
            )
        try:
            self._load_weights(directory)
        except RuntimeError as exc:  # size mismatches from load_state_dict
            first = str(exc).strip().splitlines()[0]
            raise ConfigError(
                f"{directory} does not fit this model ({first}); resume with the [model] and "
                "[local] settings the run was started with"
            ) from exc
        load_trainer_state(directory, self.updater.optimizer)

    def _load_weights(self, directory: Path) -> None:
        trainer = self.models.trainer
        if isinstance(trainer, PeftModel):
            weights = load_peft_weights(str(directory), device=str(self.models.device))
            result = set_peft_model_state_dict(trainer, weights)
            unexpected = list(getattr(result, "unexpected_keys", []))
            if unexpected:
                raise RuntimeError(f"unexpected adapter weights {unexpected[:3]}")
            return
        loaded, _ = load_causal_lm(directory, dtype=torch.float32, need_chat_template=False)
        trainer.load_state_dict(loaded.state_dict())

    def close(self) -> None:
        """Stop the server (idempotent)."""
        if not self._closed:
            self._closed = True
            self.server.stop()
