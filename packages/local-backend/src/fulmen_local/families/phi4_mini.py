"""Phi-4-mini-instruct (Phi3 architecture): tools in the system turn, ``functools[…]`` calls.

vLLM tool parser: ``phi4_mini_json``. Phi-4-mini's published template renders every message as
``<|{role}|>{content}<|end|>`` (no newlines), a system message that carries a ``tools`` key (a
JSON string) as ``<|system|>{content}<|tool|>{tools}<|/tool|><|end|>``, the generation prompt
``<|assistant|>``, and the ``eos_token`` at the end when there is no generation prompt. That
template does not read the ``tools`` argument and cannot render an assistant message without
content. fulmen's version renders both of those too, the way the model card writes them:

* ``tools`` given to ``apply_chat_template`` go into the system turn as
  ``<|tool|>[{function}, …]<|/tool|>`` — a JSON list of the tools' ``function`` objects — with
  an empty system turn when the conversation has none (a ``tools`` key on the system message
  still wins, as published);
* an assistant's tool calls follow its content as
  ``functools[{"name": "NAME", "arguments": ARGS}, …]`` (``ARGS`` verbatim when a string);
* tool results render as published for a ``tool`` role: ``<|tool|>{content}<|end|>``.

Prefix-stable for canonical calls. Tokenizer: EOS, pad, BOS and unk ``<|endoftext|>`` (no BOS
added); generation stops on ``<|endoftext|>`` and ``<|end|>``; partial rotary embedding (75 %).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from transformers import Phi3Config, PretrainedConfig

from fulmen_local.families.spec import (
    AddedToken,
    FamilySpec,
    ModelShape,
    TokenIds,
    ToolCall,
    config_kwargs,
)

__all__ = ["CHAT_TEMPLATE", "SPEC", "format_functools_calls"]

CHAT_TEMPLATE = r"""
{%- macro tool_list() -%}
    {%- set ns = namespace(fns=[]) -%}
    {%- for t in tools -%}{%- set ns.fns = ns.fns + [t.function if t.function is defined else t] -%}{%- endfor -%}
    {{- ns.fns | tojson -}}
{%- endmacro -%}
{%- if tools and not (messages and messages[0].role == 'system') -%}
    {{- '<|system|><|tool|>' + tool_list() + '<|/tool|><|end|>' -}}
{%- endif -%}
{%- for m in messages -%}
    {%- if m.role == 'system' and 'tools' in m and m.tools is not none -%}
        {{- '<|system|>' + m.content + '<|tool|>' + m.tools + '<|/tool|><|end|>' -}}
    {%- elif m.role == 'system' and loop.first and tools -%}
        {{- '<|system|>' + m.content + '<|tool|>' + tool_list() + '<|/tool|><|end|>' -}}
    {%- elif m.role == 'assistant' and m.tool_calls -%}
        {{- '<|assistant|>' + (m.content or '') + 'functools[' -}}
        {%- for call in m.tool_calls -%}
            {%- set fn = call.function if call.function is defined else call -%}
            {%- if not loop.first -%}{{- ', ' -}}{%- endif -%}
            {{- '{"name": ' + (fn.name | tojson) + ', "arguments": ' -}}
            {{- fn.arguments if fn.arguments is string else fn.arguments | tojson -}}
            {{- '}' -}}
        {%- endfor -%}
        {{- ']<|end|>' -}}
    {%- else -%}
        {{- '<|' + m.role + '|>' + m.content + '<|end|>' -}}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|assistant|>' -}}{%- else -%}{{- eos_token -}}{%- endif -%}
""".strip()
"""Jinja chat template of Phi-4-mini's format, with tools from the ``tools`` argument."""


def format_functools_calls(calls: Sequence[ToolCall]) -> str:
    """Tool calls as Phi-4-mini writes them: ``functools[`` + a JSON list + ``]``."""
    items = ", ".join(
        f'{{"name": {json.dumps(name, ensure_ascii=False)}, '
        f'"arguments": {json.dumps(args, ensure_ascii=False)}}}'
        for name, args in calls
    )
    return f"functools[{items}]"


def _config(shape: ModelShape, ids: TokenIds) -> PretrainedConfig:
    shape.check_head_dim("phi4-mini")
    return Phi3Config(
        **config_kwargs(shape, ids),
        original_max_position_embeddings=shape.max_positions,
        rope_parameters={
            "rope_type": "default", "rope_theta": 10_000.0, "partial_rotary_factor": 0.75,
        },
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        pad_token_id=ids.pad,
    )


SPEC = FamilySpec(
    name="phi4-mini",
    description="Phi-4-mini-instruct (3.8B)",
    model_type="phi3",
    make_config=_config,
    pretokenizer="o200k",
    tokenizer_class="GPT2Tokenizer",
    leading_tokens=(),
    added_tokens=(
        AddedToken("<|endoftext|>"),
        AddedToken("<|assistant|>"),
        AddedToken("<|end|>"),
        AddedToken("<|user|>"),
        AddedToken("<|system|>"),
        AddedToken("<|tool|>"),
        AddedToken("<|/tool|>"),
        AddedToken("<|tool_call|>"),
        AddedToken("<|/tool_call|>"),
        AddedToken("<|tool_response|>"),
        AddedToken("<|tag|>"),
    ),
    bos_token="<|endoftext|>",
    eos_token="<|endoftext|>",
    pad_token="<|endoftext|>",
    unk_token="<|endoftext|>",
    end_of_turn="<|end|>",
    stop_tokens=("<|endoftext|>", "<|end|>"),
    chat_template=CHAT_TEMPLATE,
    system_role="native",
    tool_parser="phi4_mini_json",
    format_tool_calls=format_functools_calls,
)
"""The Phi-4-mini family."""
