"""Small random models of real model families, with their real chat templates.

``build_family_model("qwen3", out_dir, seed=0)`` writes a Hugging Face directory of a tiny
random Qwen3 with a locally trained byte-level BPE tokenizer, Qwen3's chat template (thinking
and Hermes tool calls) and its stop tokens. :data:`FAMILIES` describes each family: its
architecture, special tokens, template, and vLLM's tool-call parser name for it.
"""

from fulmen_local.families.build import (
    build_family_model,
    build_family_tokenizer,
    family_config,
    resolve_shape,
)
from fulmen_local.families.registry import FAMILIES, get_family
from fulmen_local.families.spec import SHAPES, FamilySpec, ModelShape

__all__ = [
    "FAMILIES",
    "SHAPES",
    "FamilySpec",
    "ModelShape",
    "build_family_model",
    "build_family_tokenizer",
    "family_config",
    "get_family",
    "resolve_shape",
]
