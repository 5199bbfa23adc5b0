"""Which attention masks a model needs, and building them for the engine's slot KV cache.

The engine lays each sequence out in one *slot* of a preallocated KV cache (see
:mod:`fulmen_local.server.kvcache`): the sequence's tokens occupy columns
``[start, start + length)`` of its slot, with position ids ``0 .. length - 1``. The engine
builds the 4-D masks itself (``[rows, 1, queries, columns]``) and hands them to the model,
which uses a 4-D mask as given; a query at column ``q`` of a row may attend to column ``j``
when ``start <= j <= q``, and for sliding-window layers also ``q - j < window``. A query in a
row's left padding (``q < start``, prefill only) attends to itself alone, so no softmax row is
empty (which would turn into NaNs that leak through the cache).

Supported: every decoder layer of kind ``full_attention`` or ``sliding_attention`` (the
``layer_types`` of the text config; without it, a ``sliding_window`` set in the config means
sliding layers, as Mistral and Phi-3 do), with ``attn_implementation`` ``sdpa`` (boolean mask)
or ``eager`` (additive float mask). Models with several layer kinds (Gemma 2/3, Qwen2 with
``use_sliding_window``) get one mask per kind in a dict, which such models accept.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from fulmen.errors import ServingError

__all__ = ["AttentionLayout", "UnsupportedModelError"]

_KINDS = ("full_attention", "sliding_attention")
_IMPLEMENTATIONS = ("sdpa", "eager")

Masks = torch.Tensor | dict[str, torch.Tensor]
"""What the model's ``attention_mask`` argument receives."""


class UnsupportedModelError(ServingError, TypeError):
    """The batching engine cannot run this model (the message says why and what to do)."""


@dataclass(frozen=True, slots=True)
class AttentionLayout:
    """The attention kinds of a model's layers and how its attention reads a mask."""

    kinds: tuple[str, ...]
    """Kind of each decoder layer: ``full_attention`` or ``sliding_attention``."""
    window: int | None
    """Sliding window (tokens a query sees, itself included) of ``sliding_attention`` layers."""
    additive: bool
    """True for eager attention: masks are float (0 where allowed, a large negative value
    elsewhere) in :attr:`dtype`; else boolean (True where allowed)."""
    dtype: torch.dtype

    @classmethod
    def of(cls, model: torch.nn.Module) -> AttentionLayout:
        """Read the layout from ``model.config``.

        Raises:
            UnsupportedModelError: no config, an attention implementation other than ``sdpa``
                or ``eager``, bidirectional attention, or a layer kind other than full or
                sliding-window attention (linear attention, state-space layers...).
        """
        config = getattr(model, "config", None)
        if config is None:
            raise UnsupportedModelError(
                f"{type(model).__name__} has no transformers config; the batching engine needs "
                "a transformers causal LM"
            )
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        name = type(model).__name__
        impl = getattr(text, "_attn_implementation", None) or "sdpa"
        if impl not in _IMPLEMENTATIONS:
            raise UnsupportedModelError(
                f"{name} uses attn_implementation={impl!r}; the batching engine passes its own "
                "attention masks, which 'sdpa' and 'eager' read: load the model with "
                "attn_implementation='sdpa'"
            )
        if getattr(text, "use_bidirectional_attention", False):
            raise UnsupportedModelError(
                f"{name} uses bidirectional attention; the batching engine generates only with "
                "causal language models"
            )
        window = getattr(text, "sliding_window", None)
        window = window if isinstance(window, int) and window > 0 else None
        layers = getattr(text, "num_hidden_layers", None)
        declared = getattr(text, "layer_types", None)
        if isinstance(declared, list | tuple):
            kinds = tuple(str(k) for k in declared)
        elif isinstance(layers, int):
            kinds = ("sliding_attention" if window else "full_attention",) * layers
        else:
            raise UnsupportedModelError(f"{name}: its config does not say num_hidden_layers")
        unknown = sorted({k for k in kinds if k not in _KINDS})
        if unknown:
            raise UnsupportedModelError(
                f"{name} has layers of kind {', '.join(unknown)}; the batching engine supports "
                "only full and sliding-window attention layers"
            )
        if "sliding_attention" in kinds and window is None:
            raise UnsupportedModelError(f"{name} has sliding-window layers but no sliding_window")
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
        return cls(kinds=kinds, window=window, additive=impl == "eager", dtype=dtype)

    def masks(self, starts: torch.Tensor, queries: torch.Tensor, width: int) -> Masks:
        """Masks for ``rows`` rows whose keys are columns ``0 .. width - 1``.

        Args:
            starts: ``[rows]`` int64, first column of each row's sequence.
            queries: ``[rows, q]`` int64, column of each query token (itself written there).
            width: Number of key columns.

        Returns:
            One ``[rows, 1, q, width]`` mask when all layers are of one kind, else a dict
            from layer kind to mask.
        """
        cols = torch.arange(width, device=queries.device)
        q = queries.unsqueeze(-1)
        allowed = ((cols <= q) & (cols >= starts.view(-1, 1, 1))) | (cols == q)
        out: dict[str, torch.Tensor] = {}
        for kind in dict.fromkeys(self.kinds):
            mask = allowed
            if kind == "sliding_attention" and self.window is not None:
                mask = allowed & (cols > q - self.window)
            out[kind] = self._encode(mask.unsqueeze(1))
        return next(iter(out.values())) if len(out) == 1 else out

    def _encode(self, allowed: torch.Tensor) -> torch.Tensor:
        if not self.additive:
            return allowed
        zero = torch.zeros((), dtype=self.dtype, device=allowed.device)
        low = torch.full((), torch.finfo(self.dtype).min, dtype=self.dtype, device=allowed.device)
        return torch.where(allowed, zero, low)
