"""Llama 3.1 / 3.2 / 3.3 Instruct: header tokens, JSON tool calls (vLLM parser ``llama3_json``).

The template renders what Llama 3.2 Instruct's published template renders for custom tools:

* ``<|begin_of_text|>`` (the template adds BOS; so does the tokenizer with
  ``add_special_tokens=True`` — tokenize rendered prompts without special tokens);
* a system turn always: ``Environment: ipython\\n`` when tools are given, then ``Cutting
  Knowledge Date: December 2023\\nToday Date: {date}\\n\\n`` and the trimmed system text.
  ``{date}`` is the ``date_string`` argument, else today's date (``strftime_now("%d %b %Y")``):
  the same conversation renders differently on another day;
* with tools (``tools_in_user_message``, default true) the *first user message* carries them:
  an instruction to answer with ``{"name": function name, "parameters": dictionary of argument
  name and its value}``, then each tool as ``tojson(indent=4)`` followed by a blank line, then
  the trimmed user text;
* turns as ``<|start_header_id|>{role}<|end_header_id|>\\n\\n{content | trim}<|eot_id|>``;
* an assistant message with a ``tool_calls`` key must hold exactly one call (the template
  raises otherwise — also for ``"tool_calls": []`` or ``None``) and renders as
  ``{"name": "NAME", "parameters": ARGS}<|eot_id|>`` with ``ARGS = arguments | tojson``;
* tool results (role ``tool`` or ``ipython``) in an ``ipython`` turn; a string content is an
  iterable for Jinja, so it renders through ``tojson`` too — a result ``12`` appears as
  ``"12"``, quotes included;
* generation prompt ``<|start_header_id|>assistant<|end_header_id|>\\n\\n``.

Prefix-stable for a model that writes the canonical JSON call (no ``<|python_tag|>``: the
template renders custom tool calls without it, although vLLM's parser accepts it) and as long
as the date does not change between turns. Tokenizer: BOS ``<|begin_of_text|>``, EOS
``<|eot_id|>``, no pad token; generation stops on ``<|end_of_text|>``, ``<|eom_id|>`` and
``<|eot_id|>``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from transformers import LlamaConfig, PretrainedConfig

from fulmen_local.families.jinja import fill
from fulmen_local.families.spec import (
    AddedToken,
    FamilySpec,
    ModelShape,
    TokenIds,
    ToolCall,
    config_kwargs,
)

__all__ = ["CHAT_TEMPLATE", "SPEC", "format_llama3_calls"]

TOOLS_IN_USER = (
    "Given the following functions, please respond with a JSON for a function call with its "
    "proper arguments that best answers the given prompt.\n\n"
)
TOOLS_IN_SYSTEM = (
    "You have access to the following functions. To call a function, please respond with JSON "
    "for a function call."
)
FORMAT = (
    'Respond in the format {"name": function name, "parameters": dictionary of argument name '
    'and its value}.Do not use variables.\n\n'
)

_TEMPLATE = r"""
{{- bos_token -}}
{%- if custom_tools is defined -%}{%- set tools = custom_tools -%}{%- endif -%}
{%- if tools_in_user_message is not defined -%}{%- set tools_in_user_message = true -%}{%- endif -%}
{%- if date_string is not defined -%}
    {%- if strftime_now is defined -%}{%- set date_string = strftime_now('%d %b %Y') -%}
    {%- else -%}{%- set date_string = '26 Jul 2024' -%}{%- endif -%}
{%- endif -%}
{%- if tools is not defined -%}{%- set tools = none -%}{%- endif -%}
{%- if messages[0].role == 'system' -%}
    {%- set system_message = messages[0].content | trim -%}
    {%- set messages = messages[1:] -%}
{%- else -%}
    {%- set system_message = '' -%}
{%- endif -%}
{{- '<|start_header_id|>system<|end_header_id|>\n\n' -}}
{%- if tools is not none -%}{{- 'Environment: ipython\n' -}}{%- endif -%}
{{- 'Cutting Knowledge Date: December 2023\n' -}}
{{- 'Today Date: ' + date_string + '\n\n' -}}
{%- if tools is not none and not tools_in_user_message -%}
    {{- $TOOLS_IN_SYSTEM + $FORMAT -}}
    {%- for t in tools -%}{{- (t | tojson(indent=4)) + '\n\n' -}}{%- endfor -%}
{%- endif -%}
{{- system_message + '<|eot_id|>' -}}
{%- if tools_in_user_message and tools is not none -%}
    {%- if messages | length == 0 -%}
        {{- raise_exception('Cannot put tools in the first user message when there is no first user message!') -}}
    {%- endif -%}
    {%- set first_user_message = messages[0].content | trim -%}
    {%- set messages = messages[1:] -%}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' + $TOOLS_IN_USER + $FORMAT -}}
    {%- for t in tools -%}{{- (t | tojson(indent=4)) + '\n\n' -}}{%- endfor -%}
    {{- first_user_message + '<|eot_id|>' -}}
{%- endif -%}
{%- for m in messages -%}
    {%- if not (m.role == 'ipython' or m.role == 'tool' or 'tool_calls' in m) -%}
        {{- '<|start_header_id|>' + m.role + '<|end_header_id|>\n\n' + (m.content | trim) + '<|eot_id|>' -}}
    {%- elif 'tool_calls' in m -%}
        {%- if not m.tool_calls | length == 1 -%}
            {{- raise_exception('This model only supports single tool-calls at once!') -}}
        {%- endif -%}
        {%- set fn = m.tool_calls[0].function -%}
        {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
        {{- '{"name": "' + fn.name + '", "parameters": ' + (fn.arguments | tojson) + '}' -}}
        {{- '<|eot_id|>' -}}
    {%- else -%}
        {{- '<|start_header_id|>ipython<|end_header_id|>\n\n' -}}
        {%- if m.content is mapping or m.content is iterable -%}
            {{- m.content | tojson -}}
        {%- else -%}
            {{- m.content -}}
        {%- endif -%}
        {{- '<|eot_id|>' -}}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
{%- endif -%}
"""
CHAT_TEMPLATE = fill(
    _TEMPLATE, TOOLS_IN_USER=TOOLS_IN_USER, TOOLS_IN_SYSTEM=TOOLS_IN_SYSTEM, FORMAT=FORMAT
)
"""Jinja chat template of Llama 3.2 Instruct's format."""


def format_llama3_calls(calls: Sequence[ToolCall]) -> str:
    """The JSON a Llama 3 model writes for one call (the template renders one call only).

    Raises:
        ValueError: not exactly one call.
    """
    if len(calls) != 1:
        raise ValueError(f"Llama 3 templates render exactly one tool call, got {len(calls)}")
    name, args = calls[0]
    return f'{{"name": "{name}", "parameters": {json.dumps(args, ensure_ascii=False)}}}'


def _config(shape: ModelShape, ids: TokenIds) -> PretrainedConfig:
    return LlamaConfig(
        **config_kwargs(shape, ids),
        head_dim=shape.head_dim,
        rope_parameters={
            "rope_type": "llama3", "rope_theta": 500_000.0, "factor": 32.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": min(8192, shape.max_positions // 2),
        },
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
    )


_RESERVED = tuple(AddedToken(f"<|reserved_special_token_{i}|>") for i in range(4))

SPEC = FamilySpec(
    name="llama3",
    description="Llama 3.1 / 3.2 / 3.3 Instruct (1B-70B, text)",
    model_type="llama",
    make_config=_config,
    pretokenizer="llama3",
    tokenizer_class="PreTrainedTokenizerFast",
    leading_tokens=(),
    added_tokens=(
        AddedToken("<|begin_of_text|>"),
        AddedToken("<|end_of_text|>"),
        *_RESERVED[:2],
        AddedToken("<|finetune_right_pad_id|>"),
        _RESERVED[2],
        AddedToken("<|start_header_id|>"),
        AddedToken("<|end_header_id|>"),
        AddedToken("<|eom_id|>"),
        AddedToken("<|eot_id|>"),
        AddedToken("<|python_tag|>"),
        _RESERVED[3],
    ),
    bos_token="<|begin_of_text|>",
    eos_token="<|eot_id|>",
    add_bos=True,
    end_of_turn="<|eot_id|>",
    stop_tokens=("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"),
    config_eos_tokens=("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"),
    chat_template=CHAT_TEMPLATE,
    system_role="native",
    tool_parser="llama3_json",
    format_tool_calls=format_llama3_calls,
    sampling_defaults={"do_sample": True, "temperature": 0.6, "top_p": 0.9},
    boilerplate=(
        TOOLS_IN_USER, TOOLS_IN_SYSTEM, FORMAT, "Environment: ipython",
        "Cutting Knowledge Date: December 2023", "Today Date: 26 Jul 2024",
    ),
)
"""The Llama 3 family."""
