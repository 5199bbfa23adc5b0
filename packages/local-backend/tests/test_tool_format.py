"""``[local] tool_parser``: explicit names are checked, unset ones are read off the template."""

from __future__ import annotations

import pytest
from fulmen.config import ConfigError
from fulmen_local.model.tokenizer import build_tokenizer
from fulmen_local.model.tool_format import choose_tool_parser


def test_unset_reads_the_format_off_the_chat_template() -> None:
    tokenizer = build_tokenizer()  # ChatML + Hermes <tool_call> blocks, on a Llama architecture
    assert choose_tool_parser(None, "llama", tokenizer) == "hermes"
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['content'] }}{% endfor %}"
        "{% if tools %}<|python_tag|>{{ tools | tojson }}{% endif %}"
    )
    assert choose_tool_parser(None, "qwen2", tokenizer) == "llama3_json"
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    assert choose_tool_parser(None, "qwen2", tokenizer) == "hermes"  # the family's default
    assert choose_tool_parser(None, "gemma2", tokenizer) is None


def test_explicit_names_are_checked() -> None:
    tokenizer = build_tokenizer()
    assert choose_tool_parser("pythonic", "llama", tokenizer) == "pythonic"
    with pytest.raises(ConfigError, match=r'tool_parser = "hermse": unknown; expected one of .*hermes'):
        choose_tool_parser("hermse", "llama", tokenizer)
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(ConfigError, match="does not show tools to the model"):
        choose_tool_parser("hermes", "llama", tokenizer)
