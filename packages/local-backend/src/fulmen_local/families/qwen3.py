"""Qwen3 (dense, hybrid thinking): ChatML, ``<think>`` reasoning, Hermes tool calls.

vLLM names: tool parser ``hermes``, reasoning parser ``qwen3``. The template renders what
Qwen3's published template renders:

* a system turn only when the conversation has one or tools are given (no default text); the
  tools block opens with ``# Tools`` (after the system text and a blank line when there is one);
* the *last user query* is the last user message that is not a wrapped tool response; every
  assistant turn after it (the current tool loop) keeps its reasoning:
  ``<|im_start|>assistant\\n<think>\\n{reasoning}\\n</think>\\n\\n{content}`` — always for the
  final message, otherwise only when the reasoning is not empty. Assistant turns *before* it
  drop their reasoning: ``<|im_start|>assistant\\n{content}``. Reasoning comes from
  ``reasoning_content``, or is split off a content that contains ``</think>``;
* tool calls follow the content (a newline between, when there is content), as
  ``<tool_call>\\n{"name": "NAME", "arguments": ARGS}\\n</tool_call>`` joined by newlines,
  ``ARGS`` verbatim when it is a string and ``tojson`` otherwise;
* tool results grouped into one user turn as in Qwen2.5;
* generation prompt ``<|im_start|>assistant\\n``, plus an empty ``<think>\\n\\n</think>\\n\\n``
  when ``enable_thinking=False``.

Consequences for multi-turn training: within one tool loop the prompt is prefix-stable (turn
k+1 starts with turn k's prompt and the ids generated, reasoning included), but a new user
message drops the earlier turns' reasoning, so the next prompt is *not* an extension of the
previous one. With ``enable_thinking=False`` even the tool loop is not prefix-stable: the empty
think block of the generation prompt is not rendered again for an earlier turn without
reasoning.
"""

from __future__ import annotations

from transformers import PretrainedConfig, Qwen3Config

from fulmen_local.families.jinja import fill
from fulmen_local.families.qwen2 import TOOLS_INTRO, TOOLS_OUTRO, format_hermes_calls
from fulmen_local.families.spec import AddedToken, FamilySpec, ModelShape, TokenIds, config_kwargs

__all__ = ["CHAT_TEMPLATE", "SPEC"]

_TEMPLATE = r"""
{%- macro text(c) -%}{%- if c is string -%}{{- c -}}{%- endif -%}{%- endmacro -%}
{%- set has_system = messages and messages[0].role == 'system' -%}
{%- if tools -%}
    {{- '<|im_start|>system\n' -}}
    {%- if has_system -%}{{- messages[0].content + '\n\n' -}}{%- endif -%}
    {{- $TOOLS_INTRO -}}
    {%- for tool in tools -%}{{- '\n' + (tool | tojson) -}}{%- endfor -%}
    {{- $TOOLS_OUTRO + '<|im_end|>\n' -}}
{%- elif has_system -%}
    {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' -}}
{%- endif -%}
{%- set ns = namespace(searching=true, last_query=messages | length - 1) -%}
{%- for m in messages | reverse -%}
    {%- set index = messages | length - 1 - loop.index0 -%}
    {%- if ns.searching and m.role == 'user' and m.content is string
        and not (m.content.startswith('<tool_response>') and m.content.endswith('</tool_response>')) -%}
        {%- set ns.searching = false -%}
        {%- set ns.last_query = index -%}
    {%- endif -%}
{%- endfor -%}
{%- for m in messages -%}
    {%- set content = text(m.content) -%}
    {%- if m.role == 'user' or (m.role == 'system' and not loop.first) -%}
        {{- '<|im_start|>' + m.role + '\n' + content + '<|im_end|>\n' -}}
    {%- elif m.role == 'assistant' -%}
        {%- set reasoning = '' -%}
        {%- if m.reasoning_content is string -%}
            {%- set reasoning = m.reasoning_content -%}
        {%- elif '</think>' in content -%}
            {%- set reasoning = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') -%}
            {%- set content = content.split('</think>')[-1].lstrip('\n') -%}
        {%- endif -%}
        {%- if loop.index0 > ns.last_query and (loop.last or reasoning) -%}
            {{- '<|im_start|>assistant\n<think>\n' + reasoning.strip('\n') + '\n</think>\n\n'
                + content.lstrip('\n') -}}
        {%- else -%}
            {{- '<|im_start|>assistant\n' + content -}}
        {%- endif -%}
        {%- for call in m.tool_calls or [] -%}
            {%- if content or not loop.first -%}{{- '\n' -}}{%- endif -%}
            {%- set fn = call.function if call.function else call -%}
            {{- '<tool_call>\n{"name": "' + fn.name + '", "arguments": ' -}}
            {{- fn.arguments if fn.arguments is string else fn.arguments | tojson -}}
            {{- '}\n</tool_call>' -}}
        {%- endfor -%}
        {{- '<|im_end|>\n' -}}
    {%- elif m.role == 'tool' -%}
        {%- if loop.first or messages[loop.index0 - 1].role != 'tool' -%}
            {{- '<|im_start|>user' -}}
        {%- endif -%}
        {{- '\n<tool_response>\n' + content + '\n</tool_response>' -}}
        {%- if loop.last or messages[loop.index0 + 1].role != 'tool' -%}
            {{- '<|im_end|>\n' -}}
        {%- endif -%}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|im_start|>assistant\n' -}}
    {%- if enable_thinking is defined and enable_thinking is false -%}
        {{- '<think>\n\n</think>\n\n' -}}
    {%- endif -%}
{%- endif -%}
"""
CHAT_TEMPLATE = fill(_TEMPLATE, TOOLS_INTRO=TOOLS_INTRO, TOOLS_OUTRO=TOOLS_OUTRO)
"""Jinja chat template of Qwen3's format."""


def _config(shape: ModelShape, ids: TokenIds) -> PretrainedConfig:
    return Qwen3Config(
        **config_kwargs(shape, ids),
        head_dim=shape.head_dim,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        rms_norm_eps=1e-6,
        attention_bias=False,
        tie_word_embeddings=True,
    )


SPEC = FamilySpec(
    name="qwen3",
    description="Qwen3 dense models (0.6B-32B) with hybrid thinking",
    model_type="qwen3",
    make_config=_config,
    pretokenizer="qwen2",
    tokenizer_class="Qwen2Tokenizer",
    leading_tokens=(),
    added_tokens=(
        AddedToken("<|endoftext|>"),
        AddedToken("<|im_start|>"),
        AddedToken("<|im_end|>"),
        AddedToken("<tool_call>", special=False),
        AddedToken("</tool_call>", special=False),
        AddedToken("<tool_response>", special=False),
        AddedToken("</tool_response>", special=False),
        AddedToken("<think>", special=False),
        AddedToken("</think>", special=False),
    ),
    eos_token="<|im_end|>",
    pad_token="<|endoftext|>",
    end_of_turn="<|im_end|>",
    stop_tokens=("<|im_end|>", "<|endoftext|>"),
    chat_template=CHAT_TEMPLATE,
    system_role="native",
    config_eos_tokens=("<|im_end|>",),
    tool_parser="hermes",
    reasoning_parser="qwen3",
    format_tool_calls=format_hermes_calls,
    sampling_defaults={"do_sample": True, "temperature": 0.6, "top_p": 0.95, "top_k": 20},
    boilerplate=(TOOLS_INTRO, TOOLS_OUTRO),
)
"""The Qwen3 family."""
