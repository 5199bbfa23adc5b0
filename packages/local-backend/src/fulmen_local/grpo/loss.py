"""GRPO policy loss on padded batches of :class:`fulmen.rows.TrainingRow`.

Loss, per trained response token ``t`` (``response_mask == 1``)::

    ratio_t = exp(logp_t - old_logp_t)
    pg_t    = -min(ratio_t * A_t, clip(ratio_t, 1 - clip_low, 1 + clip_high) * A_t)
    kl_t    = exp(ref_t - logp_t) - (ref_t - logp_t) - 1        # k3 estimator, only if kl_coef > 0
    loss    = sum_t (pg_t + kl_coef * kl_t) / N

**Aggregation: token-mean over the whole batch.** ``N`` is the number of trained tokens in the
batch handed to the optimizer step (all micro-batches together), so every trained token weighs
the same whatever its row's length, and splitting a batch into micro-batches does not change
the gradient. ``old_logp`` is the rollout policy's logprob recorded in the row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
from fulmen.rows import TrainingRow

__all__ = [
    "GRPOBatch",
    "LossOutput",
    "collate_rows",
    "grpo_loss",
    "pack_by_length",
    "row_length",
    "token_logprobs",
]


@dataclass(frozen=True, slots=True)
class GRPOBatch:
    """Right-padded tensors of a list of rows; all of shape ``(rows, width)``.

    Per-token tensors are aligned with ``input_ids``: entry ``[i, t]`` is about the token
    ``input_ids[i, t]`` (predicted from position ``t - 1``); prompt and pad positions hold 0.
    """

    input_ids: torch.Tensor
    """Token ids (long), ``prompt_ids + response_ids`` then padding."""
    attention_mask: torch.Tensor
    """1 on real tokens, 0 on padding (long)."""
    response_mask: torch.Tensor
    """1.0 on trained response tokens, else 0.0 (float)."""
    old_logprobs: torch.Tensor
    """Rollout logprobs (float)."""
    advantages: torch.Tensor
    """Per-token advantages (float)."""

    @property
    def num_tokens(self) -> int:
        """Number of trained tokens."""
        return int(self.response_mask.sum().item())

    def to(self, device: torch.device) -> GRPOBatch:
        """This batch with every tensor on ``device`` (itself when already there)."""
        if self.input_ids.device == device:
            return self
        return GRPOBatch(
            input_ids=self.input_ids.to(device),
            attention_mask=self.attention_mask.to(device),
            response_mask=self.response_mask.to(device),
            old_logprobs=self.old_logprobs.to(device),
            advantages=self.advantages.to(device),
        )


T = TypeVar("T")


def row_length(row: TrainingRow) -> int:
    """Tokens a row takes in a batch: prompt plus response."""
    return len(row.prompt_ids) + len(row.response_ids)


def pack_by_length(
    items: Sequence[T], length: Callable[[T], int], max_tokens: int
) -> list[list[T]]:
    """``items`` sorted by ``length`` (stable, to limit padding) and grouped so that
    ``len(group) * longest <= max_tokens``; an item longer than ``max_tokens`` gets a group of
    its own."""
    groups: list[list[T]] = []
    current: list[T] = []
    for item in sorted(items, key=length):
        if current and (len(current) + 1) * length(item) > max_tokens:
            groups.append(current)
            current = []
        current.append(item)
    if current:
        groups.append(current)
    return groups


def collate_rows(
    rows: Sequence[TrainingRow], *, pad_token_id: int, max_length: int | None = None
) -> GRPOBatch:
    """Stack rows into a right-padded :class:`GRPOBatch`.

    Raises:
        ValueError: no rows, a row without response tokens, a prompt without tokens (the first
            response token needs a position to be predicted from), or a row longer than
            ``max_length`` (truncate rows before collating).
    """
    if not rows:
        raise ValueError("collate_rows: no rows")
    lengths: list[int] = []
    for k, row in enumerate(rows):
        if not row.prompt_ids or not row.response_ids:
            raise ValueError(
                f"collate_rows: row {k} (episode {row.episode_id}) needs a non-empty prompt and "
                "response"
            )
        n = len(row.prompt_ids) + len(row.response_ids)
        if max_length is not None and n > max_length:
            raise ValueError(
                f"collate_rows: row {k} (episode {row.episode_id}) has {n} tokens, more than "
                f"max_length={max_length}; truncate it first"
            )
        lengths.append(n)
    shape = (len(rows), max(lengths))
    input_ids = torch.full(shape, pad_token_id, dtype=torch.long)
    attention = torch.zeros(shape, dtype=torch.long)
    mask = torch.zeros(shape, dtype=torch.float32)
    old = torch.zeros(shape, dtype=torch.float32)
    adv = torch.zeros(shape, dtype=torch.float32)
    for i, (row, n) in enumerate(zip(rows, lengths, strict=True)):
        p = len(row.prompt_ids)
        input_ids[i, :n] = torch.tensor(row.prompt_ids + row.response_ids, dtype=torch.long)
        attention[i, :n] = 1
        mask[i, p:n] = torch.tensor(row.response_mask, dtype=torch.float32)
        old[i, p:n] = torch.tensor(row.rollout_logprobs, dtype=torch.float32)
        adv[i, p:n] = torch.tensor(row.advantages, dtype=torch.float32)
    return GRPOBatch(
        input_ids=input_ids,
        attention_mask=attention,
        response_mask=mask,
        old_logprobs=old * mask,
        advantages=adv * mask,
    )


def token_logprobs(
    model: torch.nn.Module,
    batch: GRPOBatch,
    *,
    with_entropy: bool = False,
    trained_only: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One forward pass: logprob of every token given its prefix, aligned with ``input_ids``.

    With ``trained_only``, the LM head runs only from the first column that holds a trained
    token of any row (``logits_to_keep``): the prompt columns every row shares never become
    vocabulary-sized logits, which are most of a micro-batch's memory with a large vocabulary.
    Columns before it are 0 then; the others are exactly what the full pass gives.

    Returns:
        ``(logprobs, entropy)``, both ``(rows, width)`` with column 0 set to 0. ``entropy`` (of
        the full next-token distribution, computed without gradient) is None unless requested.
    """
    width = int(batch.input_ids.shape[1])
    first = 1
    if trained_only:
        columns = batch.response_mask.any(dim=0).nonzero()
        first = max(int(columns[0]), 1) if columns.numel() else 1
    inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
    if first > 1:
        logits = model(**inputs, logits_to_keep=width - first + 1).logits
    else:
        logits = model(**inputs).logits
    # logits[:, j] predicts column first + j
    logits = logits[:, -(width - first + 1) : -1, :].float()
    # gather - logsumexp instead of log_softmax: autograd keeps no second vocab-sized tensor.
    normalizer = torch.logsumexp(logits, dim=-1)
    picked = logits.gather(-1, batch.input_ids[:, first:, None]).squeeze(-1) - normalizer
    zeros = torch.zeros_like(picked[:, :1]).expand(-1, first)
    entropy: torch.Tensor | None = None
    if with_entropy:
        with torch.no_grad():
            ent = normalizer - (torch.softmax(logits, dim=-1) * logits).sum(-1)
            entropy = torch.cat([zeros, ent], dim=1)
    return torch.cat([zeros, picked], dim=1), entropy


@dataclass(frozen=True, slots=True)
class LossOutput:
    """Loss of one (micro-)batch and its metrics."""

    loss: torch.Tensor
    """Scalar to backpropagate: this micro-batch's share of the batch token-mean."""
    num_tokens: int
    """Trained tokens in this micro-batch."""
    metrics: dict[str, float]
    """Means over this micro-batch's trained tokens: ``pg_loss``, ``kl`` (k3 to the reference,
    0 without one), ``entropy``, ``ratio_mean``, ``ratio_max``, ``clip_fraction`` (tokens where
    the clipped term is the active one, so they get no gradient), ``approx_kl_old`` (mean of
    ``old_logp - logp``)."""
    logprobs: torch.Tensor
    """The policy's token logprobs of this forward pass, aligned with ``input_ids``, detached
    (the rollout-vs-trainer drift compares them with ``old_logprobs``)."""


def grpo_loss(
    model: torch.nn.Module,
    batch: GRPOBatch,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    kl_coef: float = 0.0,
    ref_logprobs: torch.Tensor | None = None,
    denominator: int | None = None,
) -> LossOutput:
    """Clipped GRPO loss of ``batch`` (see the module docstring for the formula).

    Args:
        model: the policy; called once on the batch.
        batch: from :func:`collate_rows`.
        clip_low, clip_high: the ratio is clipped to ``[1 - clip_low, 1 + clip_high]``.
        kl_coef: weight of the k3 KL penalty; needs ``ref_logprobs`` when positive.
        ref_logprobs: reference-model token logprobs aligned like ``batch.input_ids`` (e.g.
            :func:`token_logprobs` of the frozen reference).
        denominator: trained tokens of the whole optimizer batch (defaults to this batch's),
            so micro-batch losses add up to the batch token-mean.

    Raises:
        ValueError: ``kl_coef > 0`` without ``ref_logprobs``, negative clip ranges or a
            non-positive denominator.
    """
    if kl_coef > 0 and ref_logprobs is None:
        raise ValueError("grpo_loss: kl_coef > 0 needs ref_logprobs from the reference model")
    if clip_low < 0 or clip_high < 0:
        raise ValueError(f"grpo_loss: clip ranges must be >= 0, got {clip_low}, {clip_high}")
    mask = batch.response_mask
    n_tokens = int(mask.sum().item())
    denom = n_tokens if denominator is None else denominator
    if denom <= 0:
        raise ValueError("grpo_loss: the batch has no trained tokens (all response_mask are 0)")
    logp, entropy = token_logprobs(model, batch, with_entropy=True, trained_only=True)
    log_ratio = (logp - batch.old_logprobs) * mask
    ratio = torch.exp(log_ratio)
    adv = batch.advantages
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    pg = torch.maximum(unclipped, clipped)
    per_token = pg
    kl = torch.zeros_like(pg)
    if ref_logprobs is not None:
        delta = (ref_logprobs - logp) * mask
        kl = torch.exp(delta) - delta - 1.0
        if kl_coef > 0:
            per_token = pg + kl_coef * kl
    loss = (per_token * mask).sum() / denom

    with torch.no_grad():
        count = max(n_tokens, 1)
        selected = mask > 0
        metrics = {
            "pg_loss": float((pg * mask).sum() / count),
            "kl": float((kl * mask).sum() / count),
            "entropy": float((entropy * mask).sum() / count) if entropy is not None else 0.0,
            "ratio_mean": float((ratio * mask).sum() / count),
            "ratio_max": float(ratio[selected].max()) if n_tokens else 1.0,
            "clip_fraction": float(((clipped > unclipped).float() * mask).sum() / count),
            "approx_kl_old": float((-log_ratio * mask).sum() / count),
        }
    return LossOutput(loss=loss, num_tokens=n_tokens, metrics=metrics, logprobs=logp.detach())
