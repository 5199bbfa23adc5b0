"""Build a random-initialised model of a family as a complete Hugging Face directory.

The directory holds ``config.json``, ``model.safetensors``, ``generation_config.json`` (the
family's stop tokens and published sampling defaults) and the tokenizer files with the chat
template, and loads with ``AutoModelForCausalLM.from_pretrained`` and
``AutoTokenizer.from_pretrained`` like a downloaded checkpoint of that family.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    GenerationConfig,
    PretrainedConfig,
    PreTrainedTokenizerFast,
)

from fulmen_local.families.bpe import DEFAULT_VOCAB, build_tokenizer
from fulmen_local.families.registry import get_family
from fulmen_local.families.spec import SHAPES, FamilySpec, ModelShape, TokenIds

__all__ = [
    "build_family_model",
    "build_family_tokenizer",
    "family_config",
    "resolve_shape",
    "token_ids",
]


def resolve_shape(shape: str | ModelShape) -> ModelShape:
    """A :class:`ModelShape` from itself or its name in :data:`SHAPES`.

    Raises:
        ValueError: unknown name, or a shape whose heads do not divide evenly.
    """
    if isinstance(shape, str):
        if shape not in SHAPES:
            raise ValueError(f"unknown model shape {shape!r}; choose one of {sorted(SHAPES)}")
        shape = SHAPES[shape]
    if shape.num_heads % shape.num_kv_heads:
        raise ValueError(
            f"num_heads {shape.num_heads} is not a multiple of num_kv_heads {shape.num_kv_heads}"
        )
    return shape


def _spec(family: str | FamilySpec) -> FamilySpec:
    return family if isinstance(family, FamilySpec) else get_family(family)


def build_family_tokenizer(
    family: str | FamilySpec, *, vocab_size: int = DEFAULT_VOCAB, max_length: int = 4096
) -> PreTrainedTokenizerFast:
    """The family's tokenizer (see :func:`fulmen_local.families.bpe.build_tokenizer`)."""
    return build_tokenizer(_spec(family), vocab_size=vocab_size, max_length=max_length)


def _token_id(tokenizer: PreTrainedTokenizerFast, token: str) -> int:
    value = tokenizer.convert_tokens_to_ids(token)
    if not isinstance(value, int) or tokenizer.convert_ids_to_tokens(value) != token:
        raise RuntimeError(f"token {token!r} is not in the tokenizer")
    return value


def token_ids(
    spec: FamilySpec, tokenizer: PreTrainedTokenizerFast, vocab_size: int | None = None
) -> TokenIds:
    """The ids a config of ``spec`` needs; ``vocab_size`` defaults to the tokenizer's length.

    Raises:
        ValueError: ``vocab_size`` is smaller than the tokenizer.
    """
    size = len(tokenizer) if vocab_size is None else vocab_size
    if size < len(tokenizer):
        raise ValueError(f"vocab_size {size} is smaller than the tokenizer ({len(tokenizer)})")
    eos = [_token_id(tokenizer, t) for t in spec.config_eos_tokens or (spec.eos_token,)]
    return TokenIds(
        vocab_size=size,
        bos=_token_id(tokenizer, spec.bos_token) if spec.bos_token else None,
        pad=_token_id(tokenizer, spec.pad_token) if spec.pad_token else None,
        config_eos=eos[0] if len(eos) == 1 else eos,
    )


def family_config(
    family: str | FamilySpec,
    *,
    shape: str | ModelShape = "tiny",
    tokenizer: PreTrainedTokenizerFast | None = None,
) -> PretrainedConfig:
    """The transformers config of ``family`` in ``shape`` (tokenizer built when not given).

    Useful on its own to instantiate a large shape on the ``meta`` device for memory figures.
    """
    spec, size = _spec(family), resolve_shape(shape)
    tok = tokenizer or build_family_tokenizer(spec, max_length=size.max_positions)
    return spec.make_config(size, token_ids(spec, tok, size.vocab_size))


def build_family_model(
    family: str | FamilySpec,
    out_dir: str | Path,
    *,
    seed: int,
    shape: str | ModelShape = "tiny",
    tokenizer_vocab: int = DEFAULT_VOCAB,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write a random ``family`` model of ``shape`` into ``out_dir`` (created); return it.

    The weights depend only on ``seed`` (and the torch version); the tokenizer only on the
    family and ``tokenizer_vocab``. ``shape.vocab_size`` (when set) pads the embedding beyond
    the tokenizer, like published checkpoints. Weights are saved in ``dtype``.

    Raises:
        ValueError: unknown family or shape, or a shape vocabulary smaller than the tokenizer.
    """
    spec, size = _spec(family), resolve_shape(shape)
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(spec, vocab_size=tokenizer_vocab, max_length=size.max_positions)
    ids = token_ids(spec, tokenizer, size.vocab_size)
    config = spec.make_config(size, ids)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.generation_config = GenerationConfig(
        bos_token_id=ids.bos,
        eos_token_id=[_token_id(tokenizer, t) for t in spec.stop_tokens],
        pad_token_id=ids.pad,
        **dict(spec.sampling_defaults),
    )
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    _write_tokenizer_class(directory, spec)
    return directory


def _write_tokenizer_class(directory: Path, spec: FamilySpec) -> None:
    """Name the family's tokenizer class (what ``AutoTokenizer`` dispatches on) and its BOS
    rule in ``tokenizer_config.json``, as the published checkpoints do."""
    path = directory / "tokenizer_config.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["tokenizer_class"] = spec.tokenizer_class
    data["add_bos_token"] = spec.add_bos
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
