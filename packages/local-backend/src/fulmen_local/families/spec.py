"""What describes a model family: :class:`FamilySpec`, and the model shapes it is built in.

A family is one published line of checkpoints (Qwen2.5-Instruct, Llama 3.2 Instruct, …): its
transformers architecture, its tokenizer's special tokens and loading class, its chat template
and the tool-call format that template and the model use. fulmen builds small random models of
each family (:mod:`fulmen_local.families.build`) so that everything that reads a user's
checkpoint — loader, server, trainer — is tested against what real checkpoints look like.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from transformers import PretrainedConfig

__all__ = [
    "SHAPES",
    "AddedToken",
    "FamilySpec",
    "ModelShape",
    "PreTokenizerStyle",
    "SystemRole",
    "TokenIds",
    "ToolCall",
    "config_kwargs",
]

PreTokenizerStyle = Literal["qwen2", "llama3", "gpt2", "o200k"]
"""How text is split before byte-level BPE (see :mod:`fulmen_local.families.bpe`)."""

SystemRole = Literal["native", "folded", "unsupported"]
"""``native``: a system turn of its own; ``folded``: prepended to the first user turn;
``unsupported``: the template raises on a system message."""

ToolCall = tuple[str, Mapping[str, Any]]
"""One tool call as ``(name, arguments)``."""


@dataclass(frozen=True, slots=True)
class ModelShape:
    """Size of a model. ``vocab_size=None`` means the tokenizer's length; a larger value pads
    the embedding (as real checkpoints do) so memory figures are honest."""

    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_positions: int = 4096
    vocab_size: int | None = None

    def check_head_dim(self, family: str) -> None:
        """Raise ValueError unless ``head_dim * num_heads == hidden_size`` (architectures
        without a separate ``head_dim`` setting derive it that way)."""
        if self.head_dim * self.num_heads != self.hidden_size:
            raise ValueError(
                f"{family}: head_dim {self.head_dim} x num_heads {self.num_heads} must equal "
                f"hidden_size {self.hidden_size}"
            )


SHAPES: dict[str, ModelShape] = {
    # 2 layers, head size 32 (vLLM's CPU attention rejects 16), grouped-query attention.
    "tiny": ModelShape(
        hidden_size=64, intermediate_size=128, num_layers=2, num_heads=2, num_kv_heads=1,
        head_dim=32,
    ),
    # About 12 M parameters (the embedding is ~0.4 M of them): the bigger CPU run.
    "10m": ModelShape(
        hidden_size=256, intermediate_size=1024, num_layers=12, num_heads=4, num_kv_heads=2,
        head_dim=64,
    ),
    # Qwen2.5-0.5B's published shape (494 M parameters with its 151,936-row embedding).
    "qwen2.5-0.5b": ModelShape(
        hidden_size=896, intermediate_size=4864, num_layers=24, num_heads=14, num_kv_heads=2,
        head_dim=64, max_positions=32768, vocab_size=151936,
    ),
}
"""Named shapes for :func:`~fulmen_local.families.build.build_family_model`."""


@dataclass(frozen=True, slots=True)
class TokenIds:
    """Ids the model config needs, resolved from the family's tokenizer."""

    vocab_size: int
    bos: int | None
    pad: int | None
    config_eos: int | list[int]
    """``config.json``'s ``eos_token_id`` (one id, or the family's list)."""


@dataclass(frozen=True, slots=True)
class AddedToken:
    """A token added after the BPE vocabulary (ids follow the trained merges)."""

    content: str
    special: bool = True
    """Special tokens are dropped by ``decode(..., skip_special_tokens=True)``."""


@dataclass(frozen=True, slots=True)
class FamilySpec:
    """One model family: architecture, tokenizer, chat template and tool-call format.

    The chat template is Jinja rendered by ``tokenizer.apply_chat_template``; each family's
    module docstring says how it matches the published template and where it deliberately
    extends it. ``tool_parser`` is vLLM's ``--tool-call-parser`` name for the family's format,
    or None when the template has no tools support.
    """

    name: str
    description: str
    """The published checkpoints this family stands for."""
    model_type: str
    """``config.model_type`` of the checkpoints (what ``AutoModelForCausalLM`` dispatches on)."""
    make_config: Callable[[ModelShape, TokenIds], PretrainedConfig]
    """The transformers config of a model of this shape."""
    pretokenizer: PreTokenizerStyle
    tokenizer_class: str
    """``tokenizer_class`` written to ``tokenizer_config.json`` (what ``AutoTokenizer`` sees)."""
    leading_tokens: tuple[str, ...]
    """Special tokens with ids 0, 1, … (before the BPE vocabulary)."""
    added_tokens: tuple[AddedToken, ...]
    """Tokens appended after the BPE vocabulary."""
    eos_token: str
    """The tokenizer's ``eos_token``."""
    end_of_turn: str
    """The token that ends an assistant turn in the template (generation stops on it)."""
    stop_tokens: tuple[str, ...]
    """``generation_config.eos_token_id``, in order."""
    chat_template: str
    system_role: SystemRole
    bos_token: str | None = None
    pad_token: str | None = None
    unk_token: str | None = None
    add_bos: bool = False
    """Whether tokenizing with ``add_special_tokens=True`` prepends ``bos_token``."""
    config_eos_tokens: tuple[str, ...] = ()
    """``config.json``'s ``eos_token_id`` (one token, or a list); empty: ``eos_token``."""
    tool_parser: str | None = None
    reasoning_parser: str | None = None
    """vLLM's ``--reasoning-parser`` name, for families that think before answering."""
    format_tool_calls: Callable[[Sequence[ToolCall]], str] | None = None
    """The text a trained model of this family emits for these calls, before ``end_of_turn``
    (what ``tool_parser`` reads); None without tools support."""
    sampling_defaults: Mapping[str, Any] = field(default_factory=lambda: {})
    """Sampling fields of the published ``generation_config.json`` (vLLM applies them by
    default)."""
    boilerplate: tuple[str, ...] = ()
    """Fixed template text, added to the tokenizer's training corpus."""

    @property
    def supports_tools(self) -> bool:
        """Whether the template renders tools and assistant tool calls."""
        return self.tool_parser is not None


def config_kwargs(shape: ModelShape, ids: TokenIds) -> dict[str, Any]:
    """The config fields every family sets the same way from a shape and its token ids (sizes,
    context, BOS/EOS); each family's config adds its own (rope, norms, windows, pad)."""
    return {
        "vocab_size": ids.vocab_size,
        "hidden_size": shape.hidden_size,
        "intermediate_size": shape.intermediate_size,
        "num_hidden_layers": shape.num_layers,
        "num_attention_heads": shape.num_heads,
        "num_key_value_heads": shape.num_kv_heads,
        "max_position_embeddings": shape.max_positions,
        "bos_token_id": ids.bos,
        "eos_token_id": ids.config_eos,
    }
