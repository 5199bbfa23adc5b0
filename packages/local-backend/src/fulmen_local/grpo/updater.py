"""GRPO optimizer step: micro-batched loss, AdamW, gradient clipping, metrics.

:class:`GRPOUpdater` owns the policy model's optimizer (and an optional frozen reference model for
the KL penalty). One :meth:`GRPOUpdater.update` call trains on one batch of rows: the rows are
split into ``num_minibatches`` optimizer steps (1 = fully on-policy), each accumulated over
micro-batches of at most ``micro_batch_tokens`` padded tokens. ``state_dict`` /
``load_state_dict`` cover model, optimizer and step count, for checkpoints.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from typing import Any

import torch
from fulmen.rows import TrainingRow

from fulmen_local.grpo.drift import LogprobDrift, compared_mask
from fulmen_local.grpo.loss import (
    GRPOBatch,
    collate_rows,
    grpo_loss,
    pack_by_length,
    row_length,
    token_logprobs,
)
from fulmen_local.grpo.old_logprobs import fill_missing_logprobs

__all__ = ["GRPOConfig", "GRPOUpdater", "pack_micro_batches"]


@dataclass(frozen=True, slots=True, kw_only=True)
class GRPOConfig:
    """Optimisation settings of :class:`GRPOUpdater`."""

    lr: float = 1e-4
    """Adam's first steps move every weight by about ``lr``: 1e-4 suits the tiny model (1e-3
    and above broke its tool-call format in one step)."""
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    clip_low: float = 0.2
    clip_high: float = 0.2
    kl_coef: float = 0.0
    """Weight of the k3 KL to the reference model (0: no reference forward at all)."""
    max_grad_norm: float = 1.0
    micro_batch_tokens: int = 8192
    """Upper bound on ``rows x padded width`` of one forward/backward pass."""
    num_minibatches: int = 1
    """Optimizer steps per :meth:`GRPOUpdater.update` (rows split evenly, in order)."""

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.max_grad_norm <= 0:
            raise ValueError("GRPOConfig: lr and max_grad_norm must be > 0")
        if self.micro_batch_tokens < 1 or self.num_minibatches < 1:
            raise ValueError("GRPOConfig: micro_batch_tokens and num_minibatches must be >= 1")
        if self.kl_coef < 0:
            raise ValueError(f"GRPOConfig.kl_coef must be >= 0, got {self.kl_coef}")


def pack_micro_batches(rows: Sequence[TrainingRow], max_tokens: int) -> list[list[TrainingRow]]:
    """Group rows (sorted by length, to limit padding) so that ``len(group) * longest <=
    max_tokens``; a row longer than ``max_tokens`` gets a group of its own."""
    return pack_by_length(rows, row_length, max_tokens)


class GRPOUpdater:
    """Trains ``model`` in place with the GRPO loss.

    Args:
        model: the policy (a causal LM returning ``.logits``); its parameters are optimised.
        config: optimisation settings.
        pad_token_id: id used to pad rows.
        reference: frozen reference model for the KL penalty (``config.kl_coef > 0`` needs it
            or ``reference_context``); it is never updated.
        reference_context: alternative to ``reference`` for LoRA: a function returning a
            context manager that yields the reference (the policy with its adapters disabled).
        max_length: longest row accepted (defaults to the model's ``max_position_embeddings``).
        autocast_dtype: compute dtype of the forward passes (``torch.autocast`` on the model's
            device); None or float32: full precision. float16 also scales the loss.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        config: GRPOConfig,
        *,
        pad_token_id: int,
        reference: torch.nn.Module | None = None,
        reference_context: Callable[[], AbstractContextManager[torch.nn.Module]] | None = None,
        max_length: int | None = None,
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        if config.kl_coef > 0 and reference is None and reference_context is None:
            raise ValueError("GRPOUpdater: kl_coef > 0 needs a reference model")
        self.model = model
        self.config = config
        self.pad_token_id = pad_token_id
        self.reference = reference
        self._reference_context = reference_context
        if reference is not None:
            reference.eval().requires_grad_(False)
        model_config = getattr(model, "config", None)
        self.max_length = max_length or getattr(model_config, "max_position_embeddings", None)
        self._params = [p for p in model.parameters() if p.requires_grad]
        if not self._params:
            raise ValueError("GRPOUpdater: the model has no trainable parameter")
        device = self._params[0].device
        self._autocast_dtype = (
            None if autocast_dtype in (None, torch.float32) else autocast_dtype
        )
        self._device_type = device.type
        self._scaler = (
            torch.amp.GradScaler(device.type) if self._autocast_dtype is torch.float16 else None
        )
        self.optimizer = torch.optim.AdamW(
            self._params,
            lr=config.lr,
            betas=config.betas,
            weight_decay=config.weight_decay,
        )
        self.step = 0

    def update(self, rows: Sequence[TrainingRow]) -> dict[str, float]:
        """Train on ``rows`` (one or more optimizer steps) and return metrics.

        Rows with no trained token are ignored. Metrics are token-weighted means over the trained
        tokens (``pg_loss``, ``kl``, ``entropy``, ``ratio_mean``, ``clip_fraction``,
        ``approx_kl_old``), ``ratio_max``, ``grad_norm`` (mean over optimizer steps, before
        clipping), ``loss``, ``num_tokens``, ``num_rows``, ``optimizer_steps`` and ``lr``.

        Rollout logprobs a row flags as missing (``TrainingRow.missing_logprobs``) are first
        recomputed by this model, before any optimizer step (:mod:`.old_logprobs`), never
        trained against as 0.0; ``local/recomputed_old_logprob_tokens`` counts them.

        The first optimizer step's forward pass also gives the rollout-vs-trainer logprob
        drift of its tokens (``drift/logprob_*``, :mod:`.drift`; recomputed tokens left out):
        every trained token with ``num_minibatches = 1``.

        Raises:
            ValueError: no row has a trained token, or a row is longer than ``max_length``.
        """
        trainable = [r for r in rows if r.num_trained_tokens > 0]
        if not trainable:
            raise ValueError("GRPOUpdater.update: no row has a trained token (response_mask)")
        flagged = [r.missing_logprobs for r in trainable]
        trainable, recomputed = fill_missing_logprobs(
            self.model, trainable, pad_token_id=self.pad_token_id,
            max_tokens=self.config.micro_batch_tokens, max_length=self.max_length,
            autocast=self._autocast,
        )
        refilled = {id(r): f for r, f in zip(trainable, flagged, strict=True) if f}
        drift = LogprobDrift()
        n_mini = min(self.config.num_minibatches, len(trainable))
        size = math.ceil(len(trainable) / n_mini)
        minibatches = [trainable[i : i + size] for i in range(0, len(trainable), size)]
        was_training = self.model.training
        self.model.train()
        sums: dict[str, float] = {}
        ratio_max = 0.0
        grad_norms: list[float] = []
        loss_total = 0.0
        tokens_total = 0
        try:
            for index, minibatch in enumerate(minibatches):
                denominator = sum(r.num_trained_tokens for r in minibatch)
                self.optimizer.zero_grad(set_to_none=True)
                for group in pack_micro_batches(minibatch, self.config.micro_batch_tokens):
                    batch = collate_rows(
                        group, pad_token_id=self.pad_token_id, max_length=self.max_length
                    )
                    if batch.num_tokens == 0:
                        continue
                    batch = batch.to(self._params[0].device)
                    ref = self._reference_logprobs(batch)
                    with self._autocast():
                        out = grpo_loss(
                            self.model,
                            batch,
                            clip_low=self.config.clip_low,
                            clip_high=self.config.clip_high,
                            kl_coef=self.config.kl_coef,
                            ref_logprobs=ref,
                            denominator=denominator,
                        )
                    if index == 0:  # the rollout's weights: nothing has been stepped yet
                        mask = compared_mask(group, batch.response_mask.shape, refilled)
                        drift.add(
                            out.logprobs, batch.old_logprobs,
                            batch.response_mask * mask.to(batch.response_mask.device),
                        )
                    if self._scaler is not None:
                        self._scaler.scale(out.loss).backward()
                    else:
                        out.loss.backward()
                    loss_total += float(out.loss.detach())
                    tokens_total += out.num_tokens
                    for key, value in out.metrics.items():
                        if key == "ratio_max":
                            ratio_max = max(ratio_max, value)
                        else:
                            sums[key] = sums.get(key, 0.0) + value * out.num_tokens
                if self._scaler is not None:
                    self._scaler.unscale_(self.optimizer)
                norm = torch.nn.utils.clip_grad_norm_(self._params, self.config.max_grad_norm)
                grad_norms.append(float(norm))
                if self._scaler is not None:
                    self._scaler.step(self.optimizer)
                    self._scaler.update()
                else:
                    self.optimizer.step()
                self.step += 1
        finally:
            self.optimizer.zero_grad(set_to_none=True)
            self.model.train(was_training)
        metrics = {key: value / max(tokens_total, 1) for key, value in sums.items()}
        metrics.update(
            ratio_max=ratio_max,
            grad_norm=sum(grad_norms) / len(grad_norms),
            loss=loss_total / len(minibatches),
            num_tokens=float(tokens_total),
            num_rows=float(len(trainable)),
            optimizer_steps=float(len(minibatches)),
            lr=float(self.optimizer.param_groups[0]["lr"]),
        )
        metrics["local/recomputed_old_logprob_tokens"] = float(recomputed)
        metrics.update(drift.metrics())
        return metrics

    def _autocast(self) -> AbstractContextManager[Any]:
        if self._autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self._device_type, dtype=self._autocast_dtype)

    def _reference_logprobs(self, batch: GRPOBatch) -> torch.Tensor | None:
        if self.config.kl_coef <= 0:
            return None
        with torch.no_grad(), self._autocast():
            if self.reference is not None:
                ref, _ = token_logprobs(self.reference, batch, trained_only=True)
                return ref
            if self._reference_context is not None:
                was_training = self.model.training
                with self._reference_context() as reference:
                    reference.eval()
                    try:
                        ref, _ = token_logprobs(reference, batch, trained_only=True)
                    finally:
                        reference.train(was_training)
                return ref
        return None

    def state_dict(self) -> dict[str, Any]:
        """Model weights, optimizer state, step count and config (for checkpoints)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "config": asdict(self.config),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (the config is not changed).

        Raises:
            KeyError: ``state`` lacks ``model``, ``optimizer`` or ``step``.
        """
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
