"""Phi-3 / Phi-3.5 mini instruct: ``<|user|>…<|end|>`` turns, no tools (parser None).

The template renders what Phi-3-mini-instruct's published template renders: each system, user
and assistant message as ``<|{role}|>\\n{content}<|end|>\\n``; messages of any other role
(``tool``) are silently left out; the generation prompt is ``<|assistant|>\\n``, and a
conversation rendered *without* the generation prompt ends with the ``eos_token``
(``<|endoftext|>``). No BOS. Tools are ignored.

Prefix-stable for the generation prompt: the model's reply ends with ``<|end|>`` and the next
prompt continues after it with ``\\n``. Tokenizer: EOS and pad ``<|endoftext|>``, BOS ``<s>``
(not added), unk ``<unk>``; generation stops on ``<|endoftext|>``, ``<|assistant|>`` and
``<|end|>``. Phi-3 publishes a SentencePiece-style Llama tokenizer; transformers 5 loads every
``phi3`` checkpoint through ``TokenizersBackend`` from ``tokenizer.json``, so the byte-level
stand-in is kept as trained even though ``tokenizer_config.json`` says ``LlamaTokenizer``.
"""

from __future__ import annotations

from transformers import Phi3Config, PretrainedConfig

from fulmen_local.families.spec import AddedToken, FamilySpec, ModelShape, TokenIds, config_kwargs

__all__ = ["CHAT_TEMPLATE", "SPEC"]

CHAT_TEMPLATE = r"""
{%- for m in messages -%}
    {%- if m.role in ['system', 'user', 'assistant'] -%}
        {{- '<|' + m.role + '|>\n' + m.content + '<|end|>\n' -}}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|assistant|>\n' -}}{%- else -%}{{- eos_token -}}{%- endif -%}
""".strip()
"""Jinja chat template of Phi-3's format."""


def _config(shape: ModelShape, ids: TokenIds) -> PretrainedConfig:
    shape.check_head_dim("phi3")
    return Phi3Config(
        **config_kwargs(shape, ids),
        original_max_position_embeddings=shape.max_positions,
        rope_parameters={"rope_type": "default", "rope_theta": 10_000.0},
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        pad_token_id=ids.pad,
    )


SPEC = FamilySpec(
    name="phi3",
    description="Phi-3 / Phi-3.5 mini instruct",
    model_type="phi3",
    make_config=_config,
    pretokenizer="gpt2",
    tokenizer_class="LlamaTokenizer",
    leading_tokens=("<unk>", "<s>", "</s>"),
    added_tokens=(
        AddedToken("<|endoftext|>"),
        AddedToken("<|assistant|>"),
        *(AddedToken(f"<|placeholder{i}|>") for i in range(1, 5)),
        AddedToken("<|system|>"),
        AddedToken("<|end|>"),
        AddedToken("<|placeholder5|>"),
        AddedToken("<|placeholder6|>"),
        AddedToken("<|user|>"),
    ),
    bos_token="<s>",
    eos_token="<|endoftext|>",
    pad_token="<|endoftext|>",
    unk_token="<unk>",
    end_of_turn="<|end|>",
    stop_tokens=("<|endoftext|>", "<|assistant|>", "<|end|>"),
    chat_template=CHAT_TEMPLATE,
    system_role="native",
)
"""The Phi-3 family."""
