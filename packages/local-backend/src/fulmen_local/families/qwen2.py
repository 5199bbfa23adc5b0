"""Qwen2 / Qwen2.5 Instruct: ChatML with Hermes tool calls (vLLM parser ``hermes``).

The template renders what Qwen2.5-Instruct's published template renders:

* a system turn always (``You are Qwen, created by Alibaba Cloud. You are a helpful
  assistant.`` when the conversation has none); with tools, the tools block follows the system
  text: one ``tool | tojson`` per line inside ``<tools></tools>``, then the instruction to
  answer with ``<tool_call>\\n{"name": …, "arguments": …}\\n</tool_call>``;
* ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` for user, later system and plain assistant
  turns;
* an assistant turn with tool calls as ``<|im_start|>assistant`` + (``\\n`` + content when
  there is content) + one ``\\n<tool_call>\\n{"name": "NAME", "arguments": ARGS}\\n</tool_call>``
  per call + ``<|im_end|>\\n``. ``ARGS`` is ``arguments | tojson`` even when it is a string (so an
  OpenAI JSON-string argument renders quoted; servers parse it to an object first);
* consecutive tool results merged into one user turn, each as
  ``\\n<tool_response>\\n{content}\\n</tool_response>``;
* ``<|im_start|>assistant\\n`` as the generation prompt.

Prefix-stable: a model that answers the generation prompt with ``<tool_call>\\n{canonical
JSON}\\n</tool_call><|im_end|>`` finds its ids again at the start of the next prompt.
Tokenizer: ``Qwen2Tokenizer`` (transformers 5 forces it for ``qwen2``), no BOS, EOS
``<|im_end|>``, pad ``<|endoftext|>``; the tool-call tags are added but not special.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from transformers import PretrainedConfig, Qwen2Config

from fulmen_local.families.jinja import fill
from fulmen_local.families.spec import (
    AddedToken,
    FamilySpec,
    ModelShape,
    TokenIds,
    ToolCall,
    config_kwargs,
)

__all__ = ["CHAT_TEMPLATE", "SPEC", "format_hermes_calls"]

DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
TOOLS_INTRO = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
TOOLS_OUTRO = (
    "\n</tools>\n\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)

_TEMPLATE = r"""
{%- set first_is_system = messages and messages[0].role == 'system' -%}
{{- '<|im_start|>system\n' -}}
{{- messages[0].content if first_is_system else $DEFAULT_SYSTEM -}}
{%- if tools -%}
    {{- '\n\n' + $TOOLS_INTRO -}}
    {%- for tool in tools -%}{{- '\n' + (tool | tojson) -}}{%- endfor -%}
    {{- $TOOLS_OUTRO -}}
{%- endif -%}
{{- '<|im_end|>\n' -}}
{%- for m in messages -%}
    {%- set plain = m.role == 'user' or (m.role == 'system' and not loop.first)
        or (m.role == 'assistant' and not m.tool_calls) -%}
    {%- if plain -%}
        {{- '<|im_start|>' + m.role + '\n' + m.content + '<|im_end|>\n' -}}
    {%- elif m.role == 'assistant' -%}
        {{- '<|im_start|>assistant' -}}
        {%- if m.content -%}{{- '\n' + m.content -}}{%- endif -%}
        {%- for call in m.tool_calls -%}
            {%- set fn = call.function if call.function is defined else call -%}
            {{- '\n<tool_call>\n{"name": "' + fn.name + '", "arguments": ' -}}
            {{- (fn.arguments | tojson) + '}\n</tool_call>' -}}
        {%- endfor -%}
        {{- '<|im_end|>\n' -}}
    {%- elif m.role == 'tool' -%}
        {%- if loop.first or messages[loop.index0 - 1].role != 'tool' -%}
            {{- '<|im_start|>user' -}}
        {%- endif -%}
        {{- '\n<tool_response>\n' + m.content + '\n</tool_response>' -}}
        {%- if loop.last or messages[loop.index0 + 1].role != 'tool' -%}
            {{- '<|im_end|>\n' -}}
        {%- endif -%}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}
"""
CHAT_TEMPLATE = fill(
    _TEMPLATE, DEFAULT_SYSTEM=DEFAULT_SYSTEM, TOOLS_INTRO=TOOLS_INTRO, TOOLS_OUTRO=TOOLS_OUTRO
)
"""Jinja chat template of Qwen2.5-Instruct's format."""


def format_hermes_calls(calls: Sequence[ToolCall]) -> str:
    """Hermes tool calls as Qwen models write them: one ``<tool_call>`` block per call,
    separated by newlines, arguments as ``json.dumps`` (the template's ``tojson``)."""
    return "\n".join(
        f'<tool_call>\n{{"name": "{name}", "arguments": {json.dumps(args, ensure_ascii=False)}}}'
        "\n</tool_call>"
        for name, args in calls
    )


def _config(shape: ModelShape, ids: TokenIds) -> PretrainedConfig:
    shape.check_head_dim("qwen2.5")
    return Qwen2Config(
        **config_kwargs(shape, ids),
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
    )


SPEC = FamilySpec(
    name="qwen2.5",
    description="Qwen2 / Qwen2.5 Instruct (0.5B-72B), Qwen2.5-Coder/Math Instruct",
    model_type="qwen2",
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
    ),
    eos_token="<|im_end|>",
    pad_token="<|endoftext|>",
    end_of_turn="<|im_end|>",
    stop_tokens=("<|im_end|>", "<|endoftext|>"),
    chat_template=CHAT_TEMPLATE,
    system_role="native",
    config_eos_tokens=("<|im_end|>",),
    tool_parser="hermes",
    format_tool_calls=format_hermes_calls,
    sampling_defaults={
        "do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20,
        "repetition_penalty": 1.05,
    },
    boilerplate=(DEFAULT_SYSTEM, TOOLS_INTRO, TOOLS_OUTRO),
)
"""The Qwen2.5 family."""
