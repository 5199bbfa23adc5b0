"""CUDA graphs of the engine's decode forward pass, one per batch-size bucket.

A decode pass launches hundreds of small kernels (every layer's projections, norms, rotary
embedding, attention); on a GPU, launching them from Python costs more than running them.
:class:`DecodeGraphs` captures the pass once per bucket of rows (powers of two up to the slot
capacity) and replays it. The captured pass reads only persistent tensors (a token buffer
owned here, the batch's slot state, the KV cache and the weights), so a graph stays valid
until one of them moves: :meth:`DecodeGraphs.invalidate` must be called when buffers grow or
parameters may have been replaced. Replaying the bucket of ``count`` rows also computes the
idle slots up to the bucket size; their results are ignored. Graphs attend over the cache's
whole column capacity (a graph's shapes are fixed).

If a capture fails (an operation that cannot be captured, such as a host sync inside the
model, or another thread's CUDA work interfering), that step runs eagerly and a warning is
logged; after :data:`MAX_FAILURES` failures graphs are switched off for good.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["MAX_FAILURES", "DecodeGraphs", "DecodePass"]

_log = logging.getLogger(__name__)

MAX_FAILURES = 3
"""Failed captures after which graphs stay off."""

DecodePass = Callable[[torch.Tensor, int, int], torch.Tensor]
"""``(ids [count, 1], count, width) -> logits [count, V]``: a decode pass of slots
``0 .. count - 1`` over ``width`` KV columns."""


class DecodeGraphs:
    """Captured decode passes by bucket (see the module docstring).

    Args:
        device: The CUDA device.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._ids: torch.Tensor | None = None
        self._pool: Any = None  # torch's graph memory-pool handle
        self._key: tuple[int, int] | None = None
        self.failure: str | None = None
        """Why the last capture failed (None if none did)."""
        self.failures = 0
        self.captures = 0
        self.replays = 0

    def invalidate(self) -> None:
        """Drop every graph (they are captured again on demand)."""
        self._graphs.clear()
        self._ids = None
        self._pool = None
        self._key = None

    def run(
        self, decode: DecodePass, tokens: torch.Tensor, count: int, slots: int, width: int
    ) -> torch.Tensor | None:
        """Replay (capturing first if needed) the pass of ``count`` rows fed ``tokens``.

        Returns:
            ``[count, V]`` logits, a view of the graph's output (valid until the next
            replay), or None when graphs are off (the caller then runs ``decode`` itself).
        """
        if self.failures >= MAX_FAILURES:
            return None
        if self._key != (slots, width):
            self.invalidate()
            self._key = (slots, width)
        if self._ids is None:
            self._ids = torch.zeros((slots, 1), dtype=torch.long, device=self.device)
        self._ids[:count, 0].copy_(tokens)
        bucket = min(1 << max(0, count - 1).bit_length(), slots)
        entry = self._graphs.get(bucket)
        if entry is None:
            try:
                entry = self._capture(decode, bucket, width)
            except Exception as exc:  # any capture problem: this step runs eagerly
                self.failures += 1
                self.failure = f"{type(exc).__name__}: {exc}"
                off = " (graphs now off)" if self.failures >= MAX_FAILURES else ""
                _log.warning("CUDA graph capture failed%s: %s", off, self.failure)
                self.invalidate()
                return None
        graph, logits = entry
        graph.replay()
        self.replays += 1
        return logits[:count]

    def _capture(
        self, decode: DecodePass, bucket: int, width: int
    ) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        assert self._ids is not None
        ids = self._ids[:bucket]
        # Warm up on a side stream (lazy initialisation must not happen during capture). The
        # warm-up writes the same keys/values the replay will write.
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            decode(ids, bucket, width)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
            logits = decode(ids, bucket, width)
        self._pool = graph.pool()
        self._graphs[bucket] = (graph, logits)
        self.captures += 1
        return graph, logits
