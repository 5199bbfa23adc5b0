"""Facts the engine needs from a model and its tokenizer: end ids, context length, decoding."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerBase

from fulmen_local.server.textstream import Decode

__all__ = [
    "TokenTexts",
    "default_eos_ids",
    "make_decoder",
    "model_context_length",
    "pad_token_id",
    "special_marker_ids",
]


def _as_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def pad_token_id(tokenizer: PreTrainedTokenizerBase) -> int | None:
    """The tokenizer's padding id, if it has one."""
    return _as_int(tokenizer.pad_token_id)


def default_eos_ids(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """The tokenizer's EOS id plus the model generation config's ``eos_token_id`` (int or list)."""
    ids: set[int] = set()
    eos = _as_int(tokenizer.eos_token_id)
    if eos is not None:
        ids.add(eos)
    config = getattr(model, "generation_config", None)
    value = getattr(config, "eos_token_id", None)
    if isinstance(value, int):
        ids.add(value)
    elif isinstance(value, list | tuple):
        ids.update(v for v in cast("Sequence[object]", value) if isinstance(v, int))
    return ids


def model_context_length(model: torch.nn.Module) -> int:
    """``max_position_embeddings`` of the model's (text) config.

    Raises:
        ValueError: the config does not say; pass ``max_model_len`` explicitly.
    """
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "get_text_config"):
        config = config.get_text_config()
    value = getattr(config, "max_position_embeddings", None)
    if not isinstance(value, int) or value <= 0:
        raise ValueError(
            "cannot tell the model's context length (no config.max_position_embeddings); "
            "pass max_model_len"
        )
    return value


def _fast_backend(tokenizer: PreTrainedTokenizerBase) -> Tokenizer | None:
    """The Rust backend when decoding may go straight to it (no Python-side clean-up)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if isinstance(backend, Tokenizer) and not getattr(
        tokenizer, "clean_up_tokenization_spaces", False
    ):
        return backend
    return None


def _special_ids(tokenizer: PreTrainedTokenizerBase) -> frozenset[int]:
    """Ids that ``decode(..., skip_special_tokens=True)`` leaves out."""
    backend = _fast_backend(tokenizer)
    if backend is not None:
        added = backend.get_added_tokens_decoder()
        return frozenset(int(i) for i, tok in added.items() if tok.special)
    added = {int(i) for i, tok in tokenizer.added_tokens_decoder.items() if tok.special}
    return frozenset(added | {int(i) for i in tokenizer.all_special_ids})


def special_marker_ids(
    tokenizer: PreTrainedTokenizerBase, markers: Sequence[str]
) -> dict[str, int]:
    """The ``markers`` that are single special tokens of ``tokenizer`` (so decoded text with
    special tokens skipped would not show them), with their ids."""
    vocab = tokenizer.get_vocab()
    special = _special_ids(tokenizer)
    found: dict[str, int] = {}
    for marker in markers:
        token_id = vocab.get(marker)
        if token_id is not None and int(token_id) in special:
            found[marker] = int(token_id)
    return found


def make_decoder(tokenizer: PreTrainedTokenizerBase, keep: frozenset[int] = frozenset()) -> Decode:
    """A fast decoder (special tokens skipped, except the ids in ``keep``) for
    :class:`~.textstream.TextStream`.

    Uses a private copy of the Rust ``tokenizers`` backend (so the engine thread never shares
    it with threads that encode prompts) when the tokenizer has one and applies no Python-side
    clean-up, else ``tokenizer.decode``. With ``keep``, the other special tokens are dropped
    before decoding, so the text is the plain decode with the kept tokens' text in place.
    """
    backend = _fast_backend(tokenizer)
    drop = _special_ids(tokenizer) - keep if keep else frozenset[int]()
    if backend is not None:
        fast = Tokenizer.from_str(backend.to_str())

        def decode_fast(ids: Sequence[int]) -> str:
            return fast.decode(list(ids), skip_special_tokens=True)

        def decode_fast_keeping(ids: Sequence[int]) -> str:
            return fast.decode([i for i in ids if i not in drop], skip_special_tokens=False)

        return decode_fast_keeping if keep else decode_fast

    def decode_slow(ids: Sequence[int]) -> str:
        return str(tokenizer.decode(list(ids), skip_special_tokens=True))

    def decode_slow_keeping(ids: Sequence[int]) -> str:
        kept = [i for i in ids if i not in drop]
        return str(tokenizer.decode(kept, skip_special_tokens=False))

    return decode_slow_keeping if keep else decode_slow


class TokenTexts:
    """Cached text of single tokens as logprobs report them (special tokens shown, e.g.
    ``<|im_end|>``). Safe to share between requests (the cache only grows to the vocabulary)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self._tokenizer = tokenizer
        self._cache: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        """The token's text."""
        found = self._cache.get(token_id)
        if found is None:
            found = str(self._tokenizer.decode([token_id], skip_special_tokens=False))
            self._cache[token_id] = found
        return found
