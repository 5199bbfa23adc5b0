"""A tiny random Qwen2 checkpoint for serving with a REAL vLLM, built offline from a seed.

The tokenizer is the vLLM test double's own byte-level BPE
(:mod:`fulmen_testkit.vllm_double.tokenizer`, trained locally with ``tokenizers``) and the chat
template below renders exactly what the double's
:func:`~fulmen_testkit.vllm_double.tokenizer.render_chat` renders (ChatML, tools in the system
turn, Hermes-style ``<tool_call>`` blocks, tool results as ``<tool_response>``). So a real
vLLM serving this model and the double render the same request into the same prompt text,
which lets a test compare the two directly.

Shape: 2 layers, hidden 128, 2 heads of size 64 (vLLM's CPU attention crashes on head size
16), vocabulary 1,000, 512 positions: about 0.4 M parameters, random (no training), built in
about a second.

Note: ``AutoTokenizer`` (transformers 5) loads this directory as ``Qwen2Tokenizer`` because the
config says ``qwen2``, and that class replaces the saved pre-tokenizer with Qwen2's, which splits
digits one by one; the double's own tokenizer keeps runs of digits together. Same vocabulary and
merges, so text still round-trips, but ids of digit runs differ from the double's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from fulmen_testkit.vllm_double.tokenizer import (
    END_TOKEN,
    TOOL_CALL_CLOSE,
    TOOL_CALL_OPEN,
    get_tokenizer,
)
from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

__all__ = [
    "CALCULATOR",
    "CHAT_TEMPLATE",
    "MAX_POSITIONS",
    "QUESTION",
    "TOOL_HISTORY",
    "build_tiny_qwen",
]

MAX_POSITIONS = 512
"""Context length of the model (vLLM's ``max_model_len`` when not overridden)."""

CALCULATOR: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate arithmetic",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string", "enum": ["3*4", "3+4"]}},
            "required": ["expression"],
        },
    },
}
"""A tool whose only valid arguments are two strings."""
QUESTION: list[dict[str, Any]] = [{"role": "user", "content": "What is 3 times 4?"}]
"""A one-turn question."""
TOOL_HISTORY: list[dict[str, Any]] = [
    *QUESTION,
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "calculator", "arguments": '{"expression": "3*4"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "12"},
]
"""The conversation after the tool ran."""
# Jinja, same output as fulmen_testkit.vllm_double.tokenizer.render_chat (tojson = json.dumps
# with ensure_ascii=False in transformers' template environment).
CHAT_TEMPLATE = (
    "{%- macro text(c) -%}"
    "{%- if c is none -%}"
    "{%- elif c is string -%}{{- c -}}"
    "{%- elif c is sequence and c is not mapping -%}"
    "{%- for part in c -%}{%- if part is mapping and part.text is string -%}{{- part.text -}}"
    "{%- endif -%}{%- endfor -%}"
    "{%- else -%}{{- c | tojson -}}{%- endif -%}"
    "{%- endmacro -%}"
    "{%- set ns = namespace(system='', rest=messages) -%}"
    "{%- if messages and messages[0].role == 'system' -%}"
    "{%- set ns.system = text(messages[0].content) -%}{%- set ns.rest = messages[1:] -%}"
    "{%- endif -%}"
    "{%- if tools -%}"
    "{%- set ns.system = ns.system ~ '\\n\\n# Tools\\n<tools>\\n' -%}"
    "{%- for tool in tools -%}{%- set ns.system = ns.system ~ (tool | tojson) ~ '\\n' -%}"
    "{%- endfor -%}"
    "{%- set ns.system = ns.system ~ '</tools>\\nTo call a function, reply with <tool_call>\\n'"
    ' ~ \'{"name": <function-name>, "arguments": <args-json-object>}\\n</tool_call>\' -%}'
    "{%- endif -%}"
    "{%- if ns.system -%}{{- '<|im_start|>system\\n' ~ ns.system ~ '<|im_end|>\\n' -}}{%- endif -%}"
    "{%- for m in ns.rest -%}"
    "{%- if m.role == 'tool' -%}"
    "{{- '<|im_start|>user\\n<tool_response>\\n' ~ text(m.content)"
    " ~ '\\n</tool_response><|im_end|>\\n' -}}"
    "{%- else -%}"
    "{{- '<|im_start|>' ~ m.role ~ '\\n' ~ text(m.content) -}}"
    "{%- if m.role == 'assistant' and m.tool_calls -%}{%- for call in m.tool_calls -%}"
    "{%- set f = call.function -%}"
    "{{- '<tool_call>\\n' ~ ({'name': f.name, 'arguments': f.arguments} | tojson)"
    " ~ '\\n</tool_call>' -}}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)
"""The chat template saved with the tokenizer."""


def build_tiny_qwen(out_dir: str | Path, *, seed: int = 0) -> Path:
    """Build the tiny random Qwen2 model and its tokenizer into ``out_dir`` (created).

    The weights depend only on ``seed`` (and the torch version); the tokenizer is identical on
    every run. The directory loads with ``AutoModelForCausalLM.from_pretrained`` /
    ``AutoTokenizer.from_pretrained`` and serves with ``vllm serve DIR``. Returns the directory.
    """
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    toy = get_tokenizer()
    # The trainer registers every added token as special; the tool-call tags must not be (as
    # in Qwen2.5), or vLLM's decoding with skip_special_tokens drops them from the text.
    spec = json.loads(toy.to_json())
    for token in spec["added_tokens"]:
        if token["content"] in (TOOL_CALL_OPEN, TOOL_CALL_CLOSE):
            token["special"] = False
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(spec)),
        eos_token=END_TOKEN,
        pad_token="<|endoftext|>",
        clean_up_tokenization_spaces=False,
        model_max_length=MAX_POSITIONS,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    if tokenizer.convert_tokens_to_ids(END_TOKEN) != toy.end_id:
        raise RuntimeError("end token id moved")
    config = Qwen2Config(
        vocab_size=toy.vocab_size,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=True,
        eos_token_id=toy.end_id,
        pad_token_id=tokenizer.pad_token_id,  # pyright: ignore[reportArgumentType]  # set: an int
        bos_token_id=None,
        # A wide init makes the random model's next-token distribution peaked enough that
        # greedy decoding is not decided by float noise.
        initializer_range=0.2,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = toy.end_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    return directory
