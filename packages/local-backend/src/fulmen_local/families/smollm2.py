"""SmolLM2 Instruct (Llama architecture): ChatML, Hermes-style tool calls (``hermes``).

Without tools the template renders exactly what SmolLM2-Instruct's published template renders:
a default system turn ``You are a helpful AI assistant named SmolLM, trained by Hugging Face``
when the conversation does not start with one, every message as
``<|im_start|>{role}\\n{content}<|im_end|>\\n`` (tool results therefore as a ``tool`` turn), and
``<|im_start|>assistant\\n`` as the generation prompt.

The published template ignores ``tools`` and cannot render an assistant message without
content (it concatenates ``None``). fulmen's version extends it the way SmolLM2's
function-calling data is written, so that the family has a tool format: the tools are listed
after the system text (``<tools>`` with one ``tojson`` per line, then the instruction to answer
in ``<tool_call>`` tags), and an assistant's tool calls follow its content as
``<tool_call>\\n{"name": …, "arguments": …}\\n</tool_call>`` blocks joined by newlines (a newline
after non-empty content). A real SmolLM2 checkpoint keeps its published template, which renders
no tools; a server should refuse tools for it unless the user supplies a template like this
one. The ``<tool_call>`` tags are plain text here (SmolLM2's vocabulary has no token for them):
they reach the model as several BPE pieces.

Prefix-stable for canonical calls. Tokenizer: ``GPT2Tokenizer`` class, BOS ``<|im_start|>``
(not added), EOS and pad ``<|im_end|>``, unk ``<|endoftext|>``; the config's pad id is the EOS id,
as published (so the embedding row of ``<|im_end|>`` is the ``padding_idx``).
"""

from __future__ import annotations

from transformers import LlamaConfig, PretrainedConfig

from fulmen_local.families.jinja import fill
from fulmen_local.families.qwen2 import format_hermes_calls
from fulmen_local.families.spec import FamilySpec, ModelShape, TokenIds, config_kwargs

__all__ = ["CHAT_TEMPLATE", "SPEC"]

DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
TOOLS_INTRO = "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
TOOLS_OUTRO = (
    "\n</tools>\n\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)

_TEMPLATE = r"""
{%- macro tool_block() -%}
    {%- if tools -%}
        {{- '\n\n' + $TOOLS_INTRO -}}
        {%- for tool in tools -%}{{- '\n' + (tool | tojson) -}}{%- endfor -%}
        {{- $TOOLS_OUTRO -}}
    {%- endif -%}
{%- endmacro -%}
{%- for m in messages -%}
    {%- if loop.first and m.role != 'system' -%}
        {{- '<|im_start|>system\n' + $DEFAULT_SYSTEM + tool_block() + '<|im_end|>\n' -}}
    {%- endif -%}
    {%- if m.role == 'assistant' and m.tool_calls -%}
        {{- '<|im_start|>assistant\n' + (m.content or '') -}}
        {%- for call in m.tool_calls -%}
            {%- if m.content or not loop.first -%}{{- '\n' -}}{%- endif -%}
            {%- set fn = call.function if call.function is defined else call -%}
            {{- '<tool_call>\n{"name": "' + fn.name + '", "arguments": ' -}}
            {{- (fn.arguments | tojson) + '}\n</tool_call>' -}}
        {%- endfor -%}
        {{- '<|im_end|>\n' -}}
    {%- else -%}
        {{- '<|im_start|>' + m.role + '\n' + m.content -}}
        {%- if loop.first and m.role == 'system' -%}{{- tool_block() -}}{%- endif -%}
        {{- '<|im_end|>\n' -}}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}
"""
CHAT_TEMPLATE = fill(
    _TEMPLATE, DEFAULT_SYSTEM=DEFAULT_SYSTEM, TOOLS_INTRO=TOOLS_INTRO, TOOLS_OUTRO=TOOLS_OUTRO
)
"""Jinja chat template: SmolLM2-Instruct's ChatML plus Hermes-style tools."""


def _config(shape: ModelShape, ids: TokenIds) -> PretrainedConfig:
    return LlamaConfig(
        **config_kwargs(shape, ids),
        head_dim=shape.head_dim,
        rope_parameters={"rope_type": "default", "rope_theta": 100_000.0},
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        pad_token_id=ids.pad,
    )


SPEC = FamilySpec(
    name="smollm2",
    description="SmolLM2 Instruct (135M, 360M, 1.7B)",
    model_type="llama",
    make_config=_config,
    pretokenizer="gpt2",
    tokenizer_class="GPT2Tokenizer",
    leading_tokens=(
        "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "<reponame>",
        "<file_sep>", "<filename>",
    ),
    added_tokens=(),
    bos_token="<|im_start|>",
    eos_token="<|im_end|>",
    pad_token="<|im_end|>",
    unk_token="<|endoftext|>",
    end_of_turn="<|im_end|>",
    stop_tokens=("<|im_end|>",),
    chat_template=CHAT_TEMPLATE,
    system_role="native",
    tool_parser="hermes",
    format_tool_calls=format_hermes_calls,
    boilerplate=(DEFAULT_SYSTEM, TOOLS_INTRO, TOOLS_OUTRO),
)
"""The SmolLM2 family."""
