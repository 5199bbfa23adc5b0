"""Gemma 3 text (``Gemma3ForCausalLM``, ``gemma3_text``): system folded into the first user turn.

The template renders what Gemma 3's published template renders for text: ``<bos>``; a leading
system message is not a turn of its own — its text and a blank line open the first user turn;
then each message as ``<start_of_turn>{role}\\n{content | trim}<end_of_turn>\\n`` (``model`` for
``assistant``; content given as parts renders each text part trimmed), and
``<start_of_turn>model\\n`` as the generation prompt. Roles must alternate user/assistant after
the system message (a tool result raises); tools are ignored (tool parser None).

Prefix-stable like Gemma 2. Tokenizer as in :mod:`fulmen_local.families.gemma2` (the 1B text
model is the one published as ``gemma3_text``; larger Gemma 3 checkpoints are multimodal and
load through ``Gemma3ForConditionalGeneration``).
"""

from __future__ import annotations

from transformers import Gemma3TextConfig, PretrainedConfig

from fulmen_local.families.gemma2 import GEMMA_TOKENS
from fulmen_local.families.spec import FamilySpec, ModelShape, TokenIds, config_kwargs

__all__ = ["CHAT_TEMPLATE", "SPEC"]

CHAT_TEMPLATE = r"""
{{- bos_token -}}
{%- if messages[0].role == 'system' -%}
    {%- if messages[0].content is string -%}
        {%- set first_user_prefix = messages[0].content + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0].content[0].text + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = '' -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for m in loop_messages -%}
    {%- if (m.role == 'user') != (loop.index0 % 2 == 0) -%}
        {{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') -}}
    {%- endif -%}
    {%- set role = 'model' if m.role == 'assistant' else m.role -%}
    {{- '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') -}}
    {%- if m.content is string -%}
        {{- m.content | trim -}}
    {%- elif m.content is iterable -%}
        {%- for part in m.content -%}
            {%- if part.type == 'image' -%}{{- '<start_of_image>' -}}
            {%- elif part.type == 'text' -%}{{- part.text | trim -}}{%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{- raise_exception('Invalid content type') -}}
    {%- endif -%}
    {{- '<end_of_turn>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<start_of_turn>model\n' -}}{%- endif -%}
""".strip()
"""Jinja chat template of Gemma 3's format (text)."""


def _config(shape: ModelShape, ids: TokenIds) -> PretrainedConfig:
    return Gemma3TextConfig(
        **config_kwargs(shape, ids),
        head_dim=shape.head_dim,
        query_pre_attn_scalar=shape.head_dim,
        sliding_window=512,
        # Gemma 3 interleaves five sliding-window layers with one global layer; keep the
        # last layer global so a small model has both kinds.
        layer_types=[
            "full_attention" if (i + 1) % 6 == 0 or i == shape.num_layers - 1
            else "sliding_attention"
            for i in range(shape.num_layers)
        ],
        tie_word_embeddings=True,
        pad_token_id=ids.pad,
    )


SPEC = FamilySpec(
    name="gemma3",
    description="Gemma 3 instruction-tuned, text-only 1B (gemma3_text)",
    model_type="gemma3_text",
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
    system_role="folded",
    sampling_defaults={"do_sample": True, "top_k": 64, "top_p": 0.95},
)
"""The Gemma 3 (text) family."""
