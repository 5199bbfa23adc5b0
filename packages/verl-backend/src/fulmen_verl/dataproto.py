"""fulmen training rows → the ``DataProto`` verl's actor update consumes.

Layout (the same as verl's agent loop output, ``verl.experimental.agent_loop``):

* ``prompts`` ``(B, P)``: prompt ids **left**-padded to the longest prompt ``P``;
* ``responses`` ``(B, R)``: response ids **right**-padded to the longest response ``R``;
* ``input_ids`` ``(B, P + R)`` = ``prompts ++ responses``;
* ``attention_mask`` ``(B, P + R)``: 1 on every real prompt and response token (masked
  observation tokens of merged rows included: the model reads them), 0 on padding;
* ``position_ids`` ``(B, P + R)``: verl's ``compute_position_id_with_mask`` (0 at the first
  real token, counting up, 0 on left padding);
* ``response_mask`` ``(B, R)``: the row's own mask (1 = trained), 0 on padding;
* ``rollout_log_probs`` ``(B, R)``: the exact logprobs vLLM sampled with, as the gateway
  recorded them (0 where masked or padded);
* ``advantages`` ``(B, R)``: fulmen's per-token advantages (0 where masked or padded);
* non-tensor ``uid``: the row's comparison group (``TrainingRow.group_id``), ``episode_id``.

**Batch sizing.** Every row of the step is trained; none is dropped or sampled. verl splits
a batch evenly over its data-parallel ranks and mini-batches, so the batch is padded up to a
multiple of ``size_divisor`` (``dp_size x num_mini_batches``) with *inert* rows: copies of the
shortest real row with ``response_mask`` and ``advantages`` all 0 and uid
:data:`PAD_UID`. They add no gradient and no token to verl's token-mean normaliser
(``loss_agg_mode = "token-mean"``, the default); with the ``seq-mean-*`` modes they count as
empty sequences in the denominator (at most ``size_divisor - 1`` of them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from fulmen.rows import TrainingRow

from fulmen_verl.step import MISSING_LOGPROBS_KEY

__all__ = [
    "PAD_UID",
    "RowTensors",
    "add_missing_logprobs",
    "collate_rows",
    "padded_size",
    "rows_to_dataproto",
]

PAD_UID = "__fulmen_pad__"
"""Group uid of the inert rows added to reach ``size_divisor``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RowTensors:
    """The tensors and per-row labels of a batch (the contents of the ``DataProto``)."""

    tensors: dict[str, torch.Tensor]
    """``prompts, responses, input_ids, attention_mask, position_ids, response_mask,
    rollout_log_probs, advantages`` (see the module docstring)."""
    uids: list[str]
    """Comparison group of each row (:data:`PAD_UID` for inert padding rows)."""
    episode_ids: list[str]
    """Episode of each row (empty for padding rows)."""
    num_real: int
    """Rows that came from ``rows`` (the first ``num_real``); the rest are inert padding."""


def padded_size(n: int, size_divisor: int) -> int:
    """Smallest multiple of ``size_divisor`` that is >= ``n`` (and >= ``size_divisor``)."""
    if size_divisor < 1:
        raise ValueError(f"size_divisor must be >= 1, got {size_divisor}")
    return max(1, -(-n // size_divisor)) * size_divisor


def _inert(row: TrainingRow) -> TrainingRow:
    n = len(row.response_ids)
    return TrainingRow(
        prompt_ids=row.prompt_ids,
        response_ids=row.response_ids,
        response_mask=(0,) * n,
        rollout_logprobs=(0.0,) * n,
        advantages=(0.0,) * n,
        group_id=PAD_UID,
        episode_id="",
        seqs=(),
    )


def collate_rows(
    rows: Sequence[TrainingRow], *, pad_token_id: int, size_divisor: int = 1
) -> RowTensors:
    """Pad ``rows`` into verl's left/right-padded layout (module docstring).

    Args:
        rows: the step's rows (all are kept, in order).
        pad_token_id: id written into padding positions (never attended to).
        size_divisor: the row count is padded up to a multiple of this with inert rows.

    Raises:
        ValueError: no rows, or a row with an empty prompt or an empty response (verl's
            no-padding conversion needs at least one token of each).
    """
    if not rows:
        raise ValueError("collate_rows: no rows (skip the update when a step has nothing to train)")
    for i, row in enumerate(rows):
        if not row.prompt_ids or not row.response_ids:
            raise ValueError(
                f"collate_rows: row {i} (episode {row.episode_id!r}) has an empty prompt or response"
            )
    shortest = min(rows, key=lambda r: len(r.prompt_ids) + len(r.response_ids))
    full = [
        *rows,
        *(_inert(shortest) for _ in range(padded_size(len(rows), size_divisor) - len(rows))),
    ]
    p_len = max(len(r.prompt_ids) for r in full)
    r_len = max(len(r.response_ids) for r in full)
    b = len(full)
    prompts = torch.full((b, p_len), pad_token_id, dtype=torch.long)
    responses = torch.full((b, r_len), pad_token_id, dtype=torch.long)
    prompt_attn = torch.zeros((b, p_len), dtype=torch.long)
    response_attn = torch.zeros((b, r_len), dtype=torch.long)
    response_mask = torch.zeros((b, r_len), dtype=torch.long)
    logprobs = torch.zeros((b, r_len), dtype=torch.float32)
    advantages = torch.zeros((b, r_len), dtype=torch.float32)
    for i, row in enumerate(full):
        p, n = len(row.prompt_ids), len(row.response_ids)
        prompts[i, p_len - p :] = torch.tensor(row.prompt_ids, dtype=torch.long)
        prompt_attn[i, p_len - p :] = 1
        responses[i, :n] = torch.tensor(row.response_ids, dtype=torch.long)
        response_attn[i, :n] = 1
        mask = torch.tensor(row.response_mask, dtype=torch.long)
        response_mask[i, :n] = mask
        logprobs[i, :n] = torch.tensor(row.rollout_logprobs, dtype=torch.float32) * mask
        advantages[i, :n] = torch.tensor(row.advantages, dtype=torch.float32) * mask
    attention_mask = torch.cat([prompt_attn, response_attn], dim=1)
    tensors = {
        "prompts": prompts,
        "responses": responses,
        "input_ids": torch.cat([prompts, responses], dim=1),
        "attention_mask": attention_mask,
        "position_ids": _position_ids(attention_mask),
        "response_mask": response_mask,
        "rollout_log_probs": logprobs,
        "advantages": advantages,
    }
    return RowTensors(
        tensors=tensors,
        uids=[r.group_id for r in full],
        episode_ids=[r.episode_id for r in full],
        num_real=len(rows),
    )


def _position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    from verl.utils.model import compute_position_id_with_mask

    out: torch.Tensor = compute_position_id_with_mask(attention_mask)
    return out


def rows_to_dataproto(
    rows: Sequence[TrainingRow],
    *,
    pad_token_id: int,
    size_divisor: int = 1,
    temperature: float = 1.0,
) -> Any:
    """The step's rows as a ``verl.DataProto`` ready for the actor update (module docstring).

    ``meta_info`` carries ``temperature`` (the rollout temperature: verl divides the logits
    by it before taking logprobs, as vLLM did when sampling) and ``global_token_num`` (tokens
    per row, for verl's throughput metrics). Returns ``Any`` because verl is untyped.

    Raises:
        ValueError: see :func:`collate_rows`.
    """
    from verl import DataProto

    built = collate_rows(rows, pad_token_id=pad_token_id, size_divisor=size_divisor)
    non_tensors = {
        "uid": np.array(built.uids, dtype=object),
        "episode_id": np.array(built.episode_ids, dtype=object),
    }
    meta = {
        "temperature": temperature,
        "global_token_num": built.tensors["attention_mask"].sum(dim=-1).tolist(),
        "fulmen_real_rows": built.num_real,
    }
    return DataProto.from_dict(tensors=built.tensors, non_tensors=non_tensors, meta_info=meta)


def add_missing_logprobs(data: Any, rows: Sequence[TrainingRow]) -> None:
    """Put the rows' unknown-logprob flags (``TrainingRow.missing_logprobs``) into ``data`` as
    :data:`~fulmen_verl.step.MISSING_LOGPROBS_KEY`, aligned with its right-padded responses
    (padding rows and tokens: 0); nothing when no row has one."""
    if not any(row.logprobs_missing for row in rows):
        return
    responses = data.batch["responses"]
    mask = torch.zeros(responses.shape, dtype=torch.int64)
    for i, row in enumerate(rows):
        if row.missing_logprobs:
            mask[i, : len(row.missing_logprobs)] = torch.tensor(row.missing_logprobs)
    data.batch[MISSING_LOGPROBS_KEY] = mask
