"""A preallocated KV cache of slots: one row per running sequence, written in place.

Each decoder layer gets a key and a value buffer of shape
``[slot_capacity, kv_heads, column_capacity, head_dim]`` on the model's device, in the model's
dtype, allocated at the first forward pass. A sequence lives in one slot (row); the engine
says before each forward pass what the pass writes (:meth:`SlotKVCache.begin_prefill`,
:meth:`SlotKVCache.begin_decode`) and the model's attention layers call
:meth:`SlotKVCache.update`, the one method of the ``transformers`` cache interface they use.
A decode step writes one column per row (no concatenation, no copy of the cache), so its
tensors keep their addresses from step to step, which CUDA graphs need. Capacities grow by
doubling (:meth:`SlotKVCache.reserve`); growing moves the buffers.

Callers run every method under ``torch.inference_mode()`` on one thread.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["SlotKVCache"]


@dataclass(frozen=True, slots=True)
class _Prefill:
    first: int
    count: int
    width: int


@dataclass(frozen=True, slots=True)
class _Decode:
    columns: torch.Tensor
    """``[count, 1, 1, 1]`` column each row's new key/value goes to (rows: slots
    ``0 .. count - 1``)."""
    width: int


class SlotKVCache:
    """Per-layer key/value buffers indexed by slot (see the module docstring).

    Args:
        num_layers: Decoder layers of the model.
    """

    is_compileable = False

    def __init__(self, num_layers: int) -> None:
        self.num_layers = num_layers
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers
        self.slot_capacity = 0
        self.column_capacity = 0
        self._plan: _Prefill | _Decode | None = None
        self._updates = [0] * num_layers

    def reserve(self, slots: int, columns: int) -> bool:
        """Make room for ``slots`` rows of ``columns`` columns; True if the buffers moved.

        Existing content is kept (slots and columns keep their indices).
        """
        if slots <= self.slot_capacity and columns <= self.column_capacity:
            return False
        self.slot_capacity = max(slots, self.slot_capacity)
        self.column_capacity = max(columns, self.column_capacity)
        for buffers in (self.keys, self.values):
            for i, old in enumerate(buffers):
                if old is not None:
                    buffers[i] = self._grown(old)
        return any(k is not None for k in self.keys)

    def begin_prefill(self, first: int, count: int, width: int) -> None:
        """The next forward pass runs ``count`` new rows of ``width`` tokens into slots
        ``first .. first + count - 1``, columns ``0 .. width - 1`` (within capacity)."""
        self._check(first + count, width)
        self._plan = _Prefill(first, count, width)
        self._updates = [0] * self.num_layers

    def begin_decode(self, columns: torch.Tensor, width: int) -> None:
        """The next forward pass feeds one token to each of slots ``0 .. count - 1``
        (``columns``: ``[count]`` int64 on the device), writing its key/value at the slot's
        column; attention reads columns ``0 .. width - 1`` of those slots."""
        self._check(int(columns.shape[0]), width)
        self._plan = _Decode(columns.view(-1, 1, 1, 1), width)
        self._updates = [0] * self.num_layers

    def layers_written(self) -> list[int]:
        """How many times each layer called :meth:`update` since the last ``begin_*``."""
        return list(self._updates)

    def update(
        self,
        key_states: torch.Tensor,
        value_states: torch.Tensor,
        layer_idx: int,
        cache_kwargs: object = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the layer's new keys/values (``[rows, kv_heads, q, head_dim]``) as planned and
        return the keys/values attention must read."""
        plan = self._plan
        if plan is None:
            raise RuntimeError("SlotKVCache.update called outside a planned forward pass")
        self._updates[layer_idx] += 1
        keys, values = self._buffers(layer_idx, key_states, value_states)
        if isinstance(plan, _Prefill):
            rows = slice(plan.first, plan.first + plan.count)
            keys[rows, :, : plan.width].copy_(key_states)
            values[rows, :, : plan.width].copy_(value_states)
            return key_states, value_states
        count, column = key_states.shape[0], plan.columns
        keys[:count].scatter_(2, column.expand(key_states.shape), key_states)
        values[:count].scatter_(2, column.expand(value_states.shape), value_states)
        return keys[:count, :, : plan.width], values[:count, :, : plan.width]

    def move(self, source: torch.Tensor, target: torch.Tensor, width: int) -> None:
        """Copy slots ``source`` to slots ``target`` (disjoint), columns ``0 .. width - 1``."""
        for buffers in (self.keys, self.values):
            for buf in buffers:
                if buf is not None:
                    buf[target, :, :width] = buf[source, :, :width]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Columns the current forward pass attends to (for models that ask)."""
        plan = self._plan
        return 0 if plan is None else plan.width

    def _check(self, slots: int, width: int) -> None:
        if slots > self.slot_capacity or width > self.column_capacity:
            raise RuntimeError(
                f"SlotKVCache: {slots} slots x {width} columns exceed the reserved "
                f"{self.slot_capacity} x {self.column_capacity}"
            )

    def _buffers(
        self, layer: int, keys: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.keys[layer], self.values[layer]
        if k is None or v is None:
            k = self.keys[layer] = self._empty(keys)
            v = self.values[layer] = self._empty(values)
        return k, v

    def _empty(self, like: torch.Tensor) -> torch.Tensor:
        shape = (self.slot_capacity, like.shape[1], self.column_capacity, like.shape[3])
        return torch.zeros(shape, dtype=like.dtype, device=like.device)

    def _grown(self, old: torch.Tensor) -> torch.Tensor:
        new = torch.zeros(
            (self.slot_capacity, old.shape[1], self.column_capacity, old.shape[3]),
            dtype=old.dtype,
            device=old.device,
        )
        new[: old.shape[0], :, : old.shape[2]] = old
        return new
