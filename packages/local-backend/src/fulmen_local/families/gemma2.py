"""Gemma 2 instruction-tuned: ``<start_of_turn>`` turns, no system role, no tools (parser None).

The template renders what Gemma 2's published template renders: ``<bos>``, then each message
as ``<start_of_turn>{role}\\n{content | trim}<end_of_turn>\\n`` with ``assistant`` written as
``model``, and ``<start_of_turn>model\\n`` as the generation prompt. It raises on a system
message (``System role not supported``) and whenever the roles do not alternate user, assistant,
user, … — so a tool result message also raises. Tools are ignored.

Prefix-stable (the content is trimmed, so a reply that starts or ends with whitespace is not).
Tokenizer: BOS ``<bos>`` (also added by the tokenizer), EOS ``<eos>``, pad ``<pad>``, unk
``<unk>``; an assistant turn ends with ``<end_of_turn>``, which is in the generation config's
stop ids but is not the tokenizer's ``eos_token`` — a server that stops only on ``eos_token``
never stops. Gemma publishes a SentencePiece-style tokenizer (``GemmaTokenizer``); the stand-in
is byte-level and saved as ``TokenizersBackend`` so that transformers keeps it as trained.
"""

from __future__ import annotations

from transformers import Gemma2Config, PretrainedConfig

from fulmen_local.families.spec import FamilySpec, ModelShape, TokenIds, config_kwargs

__all__ = ["CHAT_TEMPLATE", "GEMMA_TOKENS", "SPEC"]

CHAT_TEMPLATE = r"""
{{- bos_token -}}
{%- if messages[0].role == 'system' -%}
    {{- raise_exception('System role not supported') -}}
{%- endif -%}
{%- for m in messages -%}
    {%- if (m.role == 'user') != (loop.index0 % 2 == 0) -%}
        {{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') -}}
    {%- endif -%}
    {%- set role = 'model' if m.role == 'assistant' else m.role -%}
    {{- '<start_of_turn>' + role + '\n' + (m.content | trim) + '<end_of_turn>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<start_of_turn>model\n' -}}{%- endif -%}
""".strip()
"""Jinja chat template of Gemma 2's format."""

GEMMA_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>")
"""Gemma's leading special tokens (ids 0-4 as published; the turn markers follow)."""


def _config(shape: ModelShape, ids: TokenIds) -> PretrainedConfig:
    return Gemma2Config(
        **config_kwargs(shape, ids),
        head_dim=shape.head_dim,
        query_pre_attn_scalar=shape.head_dim,
        sliding_window=min(4096, shape.max_positions),
        final_logit_softcapping=30.0,
        attn_logit_softcapping=50.0,
        tie_word_embeddings=True,
        pad_token_id=ids.pad,
    )


SPEC = FamilySpec(
    name="gemma2",
    description="Gemma 2 instruction-tuned (2B, 9B, 27B)",
    model_type="gemma2",
    make_config=_config,
    pretokenizer="gpt2",
    tokenizer_class="TokenizersBackend",
    leading_tokens=GEMMA_TOKENS,
    added_tokens=(),
    bos_token="<bos>",
    eos_token="<eos>",
    pad_token="<pad>",
    unk_token="<unk>",
    add_bos=True,
    end_of_turn="<end_of_turn>",
    stop_tokens=("<eos>", "<end_of_turn>"),
    config_eos_tokens=("<eos>", "<end_of_turn>"),
    chat_template=CHAT_TEMPLATE,
    system_role="unsupported",
)
"""The Gemma 2 family."""
