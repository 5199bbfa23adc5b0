"""The tensors of a running batch: left-padded KV cache, masks, positions, sampling state.

A :class:`RunningBatch` always holds, for each of its rows, the logits of the row's *next*
token (so rows can be sampled, dropped, or joined by freshly prefilled rows at any step):

* :func:`prefill` runs new prompts (left-padded, with an attention mask and per-row position
  ids) and returns a batch whose logits predict their first token;
* :meth:`RunningBatch.merge` appends another batch's rows, left-padding the shorter KV cache
  so both line up (this is what lets new requests join a running batch);
* :meth:`RunningBatch.select` keeps some rows and trims KV columns that only hold padding;
* :meth:`RunningBatch.decode` feeds one sampled token per row and refreshes the logits.

The cache is a ``transformers`` :class:`~transformers.DynamicCache` created without a config,
so every layer is a plain :class:`~transformers.cache_utils.DynamicLayer` whose ``keys`` and
``values`` (``[batch, kv_heads, seq, head_dim]``) can be padded, concatenated and indexed.
Callers run every method under ``torch.inference_mode()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

__all__ = ["RowSampling", "RunningBatch", "prefill"]


@dataclass(frozen=True, slots=True)
class RowSampling:
    """Sampling state of one new row: temperature, top-p and its uniforms table."""

    temperature: float
    top_p: float
    uniforms: torch.Tensor
    """``[max_tokens]`` float64 uniforms; step ``t`` uses entry ``t``."""


class RunningBatch:
    """Rows being generated together. Built by :func:`prefill`; see the module docstring."""

    def __init__(
        self,
        *,
        cache: DynamicCache,
        mask: torch.Tensor,
        positions: torch.Tensor,
        logits: torch.Tensor,
        temperature: torch.Tensor,
        top_p: torch.Tensor,
        uniforms: torch.Tensor,
        steps: torch.Tensor,
    ) -> None:
        self.cache = cache
        self.mask = mask
        """``[B, L]`` int64: 1 where the KV column holds a real token of the row."""
        self.positions = positions
        """``[B]`` int64: position id of the row's next input token."""
        self.logits = logits
        """``[B, V]``: logits of the row's next token."""
        self.temperature = temperature
        self.top_p = top_p
        self.uniforms = uniforms
        """``[B, T]`` float64 uniforms (rows padded with 0.5 past their max_tokens)."""
        self.steps = steps
        """``[B]`` int64: tokens sampled so far per row."""

    def __len__(self) -> int:
        return int(self.mask.shape[0])

    @property
    def kv_length(self) -> int:
        """Number of KV columns (longest row plus left padding)."""
        return int(self.mask.shape[1])

    def step_uniforms(self) -> torch.Tensor:
        """``[B]`` uniforms for the current step of each row."""
        index = self.steps.clamp_max(self.uniforms.shape[1] - 1).unsqueeze(-1)
        return self.uniforms.gather(1, index).squeeze(-1)

    def merge(self, other: RunningBatch) -> None:
        """Append ``other``'s rows after this batch's rows (``other`` is consumed)."""
        length = max(self.kv_length, other.kv_length)
        self._pad_left(length - self.kv_length)
        other._pad_left(length - other.kv_length)
        for mine, theirs in zip(_layers(self.cache), _layers(other.cache), strict=True):
            (k1, v1), (k2, v2) = _kv(mine), _kv(theirs)
            mine.keys = torch.cat([k1, k2], dim=0)
            mine.values = torch.cat([v1, v2], dim=0)
        self.mask = torch.cat([self.mask, other.mask], dim=0)
        self.positions = torch.cat([self.positions, other.positions])
        self.logits = torch.cat([self.logits, other.logits], dim=0)
        self.temperature = torch.cat([self.temperature, other.temperature])
        self.top_p = torch.cat([self.top_p, other.top_p])
        width = max(self.uniforms.shape[1], other.uniforms.shape[1])
        self.uniforms = torch.cat(
            [_pad_cols(self.uniforms, width), _pad_cols(other.uniforms, width)], dim=0
        )
        self.steps = torch.cat([self.steps, other.steps])

    def select(self, rows: Sequence[int]) -> None:
        """Keep only ``rows`` (in that order) and drop KV columns no kept row uses."""
        index = torch.tensor(list(rows), dtype=torch.long, device=self.mask.device)
        mask = self.mask.index_select(0, index)
        used = mask.any(dim=0)
        first = int(used.int().argmax()) if bool(used.any()) else 0
        for layer in _layers(self.cache):
            keys, values = _kv(layer)
            layer.keys = keys.index_select(0, index)[:, :, first:]
            layer.values = values.index_select(0, index)[:, :, first:]
        self.mask = mask[:, first:]
        cpu_index = index.to(self.uniforms.device)
        self.positions = self.positions.index_select(0, index)
        self.logits = self.logits.index_select(0, index)
        self.temperature = self.temperature.index_select(0, index)
        self.top_p = self.top_p.index_select(0, index)
        self.uniforms = self.uniforms.index_select(0, cpu_index)
        self.steps = self.steps.index_select(0, cpu_index)

    def decode(self, model: torch.nn.Module, tokens: torch.Tensor) -> None:
        """Feed ``tokens`` (``[B]``, one per row) and replace :attr:`logits` with the next ones."""
        ones = torch.ones((len(self), 1), dtype=self.mask.dtype, device=self.mask.device)
        self.mask = torch.cat([self.mask, ones], dim=1)
        out = model(
            input_ids=tokens.unsqueeze(-1),
            attention_mask=self.mask,
            position_ids=self.positions.unsqueeze(-1),
            past_key_values=self.cache,
            use_cache=True,
        )
        self.logits = out.logits[:, -1, :].float()
        self.positions = self.positions + 1
        self.steps = self.steps + 1

    def _pad_left(self, count: int) -> None:
        if count <= 0:
            return
        for layer in _layers(self.cache):
            keys, values = _kv(layer)
            layer.keys = F.pad(keys, (0, 0, count, 0))
            layer.values = F.pad(values, (0, 0, count, 0))
        self.mask = F.pad(self.mask, (count, 0))


def prefill(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    sampling: Sequence[RowSampling],
    *,
    pad_id: int,
    device: torch.device,
) -> RunningBatch:
    """Run ``prompts`` (left-padded together) through ``model`` and return their batch.

    Raises:
        ValueError: a prompt is empty.
        TypeError: the model's cache is not made of plain dynamic layers.
    """
    if any(len(p) == 0 for p in prompts):
        raise ValueError("cannot generate from an empty prompt")
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(list(prompt), dtype=torch.long)
        mask[row, width - len(prompt) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    position_ids = (mask.cumsum(dim=-1) - 1).clamp_min(0)
    cache = DynamicCache()
    inputs = {
        "input_ids": ids,
        "attention_mask": mask,
        "position_ids": position_ids,
        "past_key_values": cache,
        "use_cache": True,
    }
    try:
        out = model(**inputs, logits_to_keep=1)  # only the last position's logits
    except TypeError:  # a model without logits_to_keep
        cache = inputs["past_key_values"] = DynamicCache()
        out = model(**inputs)
    for layer in cache.layers:
        if type(layer) is not DynamicLayer:
            raise TypeError(
                f"the engine batches only models with plain dynamic KV caches; this model's "
                f"cache uses {type(layer).__name__}"
            )
    steps = max(int(s.uniforms.shape[0]) for s in sampling)
    return RunningBatch(
        cache=cache,
        mask=mask,
        positions=mask.sum(dim=-1),
        logits=out.logits[:, -1, :].float(),
        temperature=torch.tensor([s.temperature for s in sampling], device=device),
        top_p=torch.tensor([s.top_p for s in sampling], device=device),
        uniforms=torch.stack([_pad_cols(s.uniforms.unsqueeze(0), steps)[0] for s in sampling]),
        steps=torch.zeros(len(prompts), dtype=torch.long),
    )


def _layers(cache: DynamicCache) -> list[DynamicLayer]:
    return [layer for layer in cache.layers if isinstance(layer, DynamicLayer)]


def _kv(layer: DynamicLayer) -> tuple[torch.Tensor, torch.Tensor]:
    keys, values = layer.keys, layer.values
    if keys is None or values is None:
        raise RuntimeError("a KV cache layer is empty: the model did not fill its cache")
    return keys, values


def _pad_cols(table: torch.Tensor, width: int) -> torch.Tensor:
    if table.shape[-1] >= width:
        return table
    return F.pad(table, (0, width - table.shape[-1]), value=0.5)
