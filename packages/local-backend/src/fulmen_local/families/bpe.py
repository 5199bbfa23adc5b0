"""Byte-level BPE tokenizers for the families, trained locally with ``tokenizers``.

Every family's tokenizer is byte-level BPE (any text encodes, and decodes back unchanged) learnt
from :func:`~fulmen_local.families.corpus.training_corpus` in about half a second: the
corpus's repertoire yields about 1,400 tokens, so :data:`DEFAULT_VOCAB` is a ceiling rather than
the size reached. What differs per family is how text is split before the merges — the
family's own pre-tokenizer, so that the loading class transformers picks for it keeps the
saved pipeline:

``qwen2``  transformers' Qwen2 split pattern (digits one by one), NFC, byte-level. transformers
           5 loads every ``qwen2`` checkpoint with ``Qwen2Tokenizer``, which rebuilds exactly
           this pipeline from the saved vocabulary and merges.
``llama3`` the Llama 3 (tiktoken cl100k) pattern: digit runs of up to three, byte-level.
``gpt2``   GPT-2's byte-level split (what ``GPT2Tokenizer``, SmolLM2's class, rebuilds).
``o200k``  the o200k pattern of Phi-4-mini (case-aware words, digit runs of up to three).

Gemma and Phi-3 publish SentencePiece-style tokenizers (``▁`` for spaces, byte fallback); their
stand-ins here are byte-level (``gpt2`` split) instead, which changes how text splits into ids
but none of the special-token or template behaviour.
"""

from __future__ import annotations

import functools

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from tokenizers.trainers import BpeTrainer
from transformers import PreTrainedTokenizerFast
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX as QWEN2_PATTERN

from fulmen_local.families.corpus import training_corpus
from fulmen_local.families.spec import FamilySpec, PreTokenizerStyle

__all__ = ["DEFAULT_VOCAB", "LLAMA3_PATTERN", "O200K_PATTERN", "build_tokenizer"]

DEFAULT_VOCAB = 2048
"""Default ceiling of the trained vocabulary (leading special tokens included)."""

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
"""Llama 3's split pattern."""
_UPPER = r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]"
_LOWER = r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]"
_CONTRACTION = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
O200K_PATTERN = (
    rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPER}*{_LOWER}+{_CONTRACTION}"
    rf"|[^\r\n\p{{L}}\p{{N}}]?{_UPPER}+{_LOWER}*{_CONTRACTION}"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
"""The o200k split pattern (Phi-4-mini)."""


def _pipeline(style: PreTokenizerStyle) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.decoder = decoders.ByteLevel()
    if style == "gpt2":
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        return tokenizer
    pattern = {"qwen2": QWEN2_PATTERN, "llama3": LLAMA3_PATTERN, "o200k": O200K_PATTERN}[style]
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    if style == "qwen2":
        tokenizer.normalizer = normalizers.NFC()
    return tokenizer


@functools.lru_cache(maxsize=16)
def _trained(
    style: PreTokenizerStyle, vocab_size: int, leading: tuple[str, ...], extra: tuple[str, ...]
) -> str:
    tokenizer = _pipeline(style)
    trainer = BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in leading],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(training_corpus(extra), trainer)
    return tokenizer.to_str()


def build_tokenizer(
    spec: FamilySpec, *, vocab_size: int = DEFAULT_VOCAB, max_length: int = 4096
) -> PreTrainedTokenizerFast:
    """The family's tokenizer: trained BPE, the family's tokens, chat template and BOS rule.

    Training is cached per pre-tokenizer style, size and extra text, so building the same
    family twice in a process costs nothing. ``max_length`` becomes ``model_max_length``.

    Raises:
        ValueError: ``vocab_size`` is too small to hold the byte alphabet and the family's
            leading tokens.
    """
    floor = 256 + len(spec.leading_tokens)
    if vocab_size < floor:
        raise ValueError(f"vocab_size {vocab_size} is below {floor} (bytes + leading tokens)")
    backend = Tokenizer.from_str(
        _trained(spec.pretokenizer, vocab_size, spec.leading_tokens, spec.boilerplate)
    )
    backend.add_tokens([
        AddedToken(t.content, special=t.special, normalized=False) for t in spec.added_tokens
    ])
    named = {spec.bos_token, spec.eos_token, spec.pad_token, spec.unk_token}
    extra_special = [
        t for t in (*spec.leading_tokens, *(a.content for a in spec.added_tokens if a.special))
        if t not in named
    ]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=spec.bos_token,
        eos_token=spec.eos_token,
        pad_token=spec.pad_token,
        unk_token=spec.unk_token,
        extra_special_tokens=extra_special,
        add_bos_token=spec.add_bos,
        clean_up_tokenization_spaces=False,
        model_max_length=max_length,
    )
    tokenizer.chat_template = spec.chat_template
    return tokenizer
