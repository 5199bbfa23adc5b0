"""Rollout vs trainer logprobs on the same tokens, from the update's own first forward pass.

The server recorded a logprob for every generated token (``TrainingRow.rollout_logprobs``);
the trainer's first optimizer step computes its own for the same tokens with the same weights
(the embedded backend publishes after every update and its episodes run on the published
version). Their difference is pure serving/training mismatch: kernels, dtype, batching, a
template or token the two sides see differently. :class:`LogprobDrift` accumulates it over the
micro-batches of the first optimizer step only (later steps' weights have moved) and reports
the ``drift/logprob_*`` keys of :mod:`fulmen.train.schema`. Tokens whose rollout logprob was
missing and recomputed by the trainer are left out (they would compare the trainer with
itself). Measuring costs no extra forward pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from fulmen.rows import TrainingRow

__all__ = ["LogprobDrift", "compared_mask"]


def compared_mask(
    rows: Sequence[TrainingRow], shape: torch.Size, recomputed: Mapping[int, Sequence[int]]
) -> torch.Tensor:
    """1.0 where a token's rollout logprob is the server's, 0.0 where the trainer recomputed it
    (``recomputed``: ``id(row)`` to its former ``missing_logprobs`` flags), aligned like
    :func:`~fulmen_local.grpo.loss.collate_rows`'s batch of ``rows``."""
    mask = torch.ones(shape, dtype=torch.float32)
    for i, row in enumerate(rows):
        flags = recomputed.get(id(row))
        if flags:
            p = len(row.prompt_ids)
            mask[i, p : p + len(flags)] = 1.0 - torch.tensor(flags, dtype=torch.float32)
    return mask


@dataclass(slots=True)
class LogprobDrift:
    """Running sums of |rollout - trainer| and the k3 estimate over compared tokens."""

    tokens: int = 0
    abs_sum: float = 0.0
    abs_max: float = 0.0
    k3_sum: float = 0.0

    def add(self, trainer: torch.Tensor, rollout: torch.Tensor, mask: torch.Tensor) -> None:
        """Add the tokens where ``mask`` is 1 (tensors of one shape; ``trainer`` may carry
        gradient, nothing here does)."""
        with torch.no_grad():
            selected = mask > 0
            n = int(selected.sum())
            if not n:
                return
            # float64: k3 of a ~1e-7 difference is ~1e-14, below float32's rounding of exp(d) - d - 1
            d = (trainer.detach().double() - rollout.double())[selected]
            self.tokens += n
            self.abs_sum += float(d.abs().sum())
            self.abs_max = max(self.abs_max, float(d.abs().max()))
            self.k3_sum += float((torch.exp(d) - d - 1.0).sum())

    def metrics(self) -> dict[str, float]:
        """The ``drift/logprob_*`` keys (all 0.0 with no compared token)."""
        n = max(self.tokens, 1)
        return {
            "drift/logprob_tokens": float(self.tokens),
            "drift/logprob_abs_diff_mean": self.abs_sum / n,
            "drift/logprob_abs_diff_max": self.abs_max,
            "drift/logprob_k3": self.k3_sum / n,
        }
