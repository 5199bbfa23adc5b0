"""Every model family builds into a Hugging Face directory that the Auto classes load, whose
chat template round-trips through the tokenizer, and whose model trains and generates."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from fulmen_local.families import (
    FAMILIES,
    SHAPES,
    FamilySpec,
    build_family_model,
    family_config,
    get_family,
)
from fulmen_local.families.jinja import fill
from fulmen_local.server.template import template_supports_tools
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

torch.set_num_threads(1)

NAMES = sorted(FAMILIES)
# The class transformers 5 loads each directory with: Qwen2Tokenizer and GPT2Tokenizer rebuild
# their pipeline from the saved vocabulary, the others keep tokenizer.json as saved.
LOADED_TOKENIZER = {
    "qwen2.5": "Qwen2Tokenizer",
    "qwen3": "Qwen2Tokenizer",
    "smollm2": "GPT2Tokenizer",
    "llama3": "TokenizersBackend",
    "gemma2": "TokenizersBackend",
    "gemma3": "TokenizersBackend",
    "phi3": "TokenizersBackend",
    "phi4-mini": "TokenizersBackend",
}
CALCULATOR: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate arithmetic",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string"}},
            "required": ["expression"],
        },
    },
}
ODD_TEXT = "And 2+2?  Café, naïve — ünïcode ✓ 3.14159\n\n\tdone"


def conversation(spec: FamilySpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """A multi-turn conversation the family's template accepts, and its tools: with a tool
    call and its result where the template supports tools."""
    system = [{"role": "system", "content": "You are a calculator agent."}]
    if spec.system_role == "unsupported":
        system = []
    if not spec.supports_tools:
        return [
            *system,
            {"role": "user", "content": "What is 37*48?"},
            {"role": "assistant", "content": "The answer is 1776."},
            {"role": "user", "content": ODD_TEXT},
        ], None
    call = {"id": "call_1", "type": "function",
            "function": {"name": "calculator", "arguments": {"expression": "37*48"}}}
    return [
        *system,
        {"role": "user", "content": "What is 37*48? Use the tool."},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "1776"},
        {"role": "assistant", "content": "The answer is 1776."},
        {"role": "user", "content": ODD_TEXT},
    ], [CALCULATOR]


def render(tokenizer: Any, messages: list[dict[str, Any]],
           tools: list[dict[str, Any]] | None, **kwargs: Any) -> str:
    text = tokenizer.apply_chat_template(
        messages, tools=tools, tokenize=False, date_string="26 Jul 2024", **kwargs
    )
    assert isinstance(text, str)
    return text


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {name: build_family_model(name, root / name, seed=0) for name in NAMES}


@pytest.fixture(scope="module")
def tokenizers(family_dirs: dict[str, Path]) -> dict[str, PreTrainedTokenizerBase]:
    return {name: AutoTokenizer.from_pretrained(str(d)) for name, d in family_dirs.items()}


def ids_of(tokenizer: PreTrainedTokenizerBase, tokens: tuple[str, ...]) -> list[int]:
    return [int(tokenizer.convert_tokens_to_ids(t)) for t in tokens]  # pyright: ignore[reportArgumentType]


@pytest.mark.parametrize("name", NAMES)
def test_directory_loads_with_auto_classes_as_the_family(
    name: str, family_dirs: dict[str, Path], tokenizers: dict[str, PreTrainedTokenizerBase]
) -> None:
    spec, directory, tok = FAMILIES[name], family_dirs[name], tokenizers[name]
    model: Any = AutoModelForCausalLM.from_pretrained(str(directory))
    assert model.config.model_type == spec.model_type
    assert type(tok).__name__ == LOADED_TOKENIZER[name]
    assert (tok.eos_token, tok.bos_token, tok.pad_token) == (
        spec.eos_token, spec.bos_token, spec.pad_token
    )
    assert 1000 <= len(tok) <= 4096 and model.config.vocab_size == len(tok)
    stop_ids = ids_of(tok, spec.stop_tokens)
    generation = json.loads((directory / "generation_config.json").read_text())
    assert generation["eos_token_id"] == stop_ids
    assert ids_of(tok, (spec.end_of_turn,))[0] in stop_ids
    for key, value in spec.sampling_defaults.items():
        assert generation[key] == value
    # BOS is prepended by the tokenizer exactly for the families that publish it so.
    with_special = tok("hello", add_special_tokens=True)["input_ids"]
    without = tok("hello", add_special_tokens=False)["input_ids"]
    assert with_special == ([tok.bos_token_id] if spec.add_bos else []) + without
    # The loaded class encodes exactly like the trained tokenizer.json (no pipeline swapped).
    raw = Tokenizer.from_file(str(directory / "tokenizer.json"))
    text = render(tok, *conversation(spec), add_generation_prompt=True)
    assert tok(text, add_special_tokens=False)["input_ids"] == raw.encode(
        text, add_special_tokens=False
    ).ids


@pytest.mark.parametrize("name", NAMES)
def test_template_text_round_trips_through_the_tokenizer(
    name: str, tokenizers: dict[str, PreTrainedTokenizerBase]
) -> None:
    spec, tok = FAMILIES[name], tokenizers[name]
    messages, tools = conversation(spec)
    text = render(tok, messages, tools, add_generation_prompt=True)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    # apply_chat_template's own tokenization agrees (no second BOS).
    templated: Any = tok.apply_chat_template(
        messages, tools=tools, add_generation_prompt=True, tokenize=True,  # pyright: ignore[reportArgumentType]
        return_dict=True, date_string="26 Jul 2024",
    )
    assert list(templated["input_ids"]) == ids
    end_id = ids_of(tok, (spec.end_of_turn,))[0]
    assert ids.count(end_id) == text.count(spec.end_of_turn) > 0
    if spec.add_bos:  # the template writes BOS once; tokenizing it adds no second one
        assert ids.count(tok.bos_token_id) == 1 == text.count(spec.bos_token or "")
    assert ODD_TEXT.strip() in text
    if spec.format_tool_calls is not None:
        assert spec.format_tool_calls([("calculator", {"expression": "37*48"})]) in text
        assert CALCULATOR["function"]["description"] in text  # the tools are shown
    # The server's probe agrees with the spec about tools support.
    assert template_supports_tools(tok) == spec.supports_tools


@pytest.mark.parametrize("name", NAMES)
def test_forward_backward_and_greedy_generate(
    name: str, family_dirs: dict[str, Path], tokenizers: dict[str, PreTrainedTokenizerBase]
) -> None:
    spec, tok = FAMILIES[name], tokenizers[name]
    model: Any = AutoModelForCausalLM.from_pretrained(str(family_dirs[name]))
    text = render(tok, *conversation(spec), add_generation_prompt=True)
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    model.train()
    loss = model(input_ids=ids, labels=ids).loss
    # A random model predicts close to uniformly over the vocabulary.
    assert abs(loss.item() - math.log(model.config.vocab_size)) < 0.5
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing
    model.eval()
    with torch.no_grad():
        first = model.generate(ids, max_new_tokens=4, do_sample=False)
        second = model.generate(ids, max_new_tokens=4, do_sample=False)
    assert torch.equal(first, second)
    assert torch.equal(first[:, : ids.shape[1]], ids)
    assert ids.shape[1] < first.shape[1] <= ids.shape[1] + 4


def test_shapes_for_bigger_runs_and_memory_figures() -> None:
    ten = family_config("qwen2.5", shape="10m")
    half = family_config("qwen2.5", shape="qwen2.5-0.5b")
    with torch.device("meta"):
        ten_params = sum(p.numel() for p in AutoModelForCausalLM.from_config(ten).parameters())
        half_params = sum(p.numel() for p in AutoModelForCausalLM.from_config(half).parameters())
    assert 10_000_000 <= ten_params < 20_000_000
    assert half.vocab_size == 151936
    assert (half.hidden_size, half.num_hidden_layers, half.num_attention_heads) == (896, 24, 14)
    assert (half.num_key_value_heads, half.intermediate_size) == (2, 4864)
    assert half_params == 494_032_768  # Qwen2.5-0.5B's published count (tied embedding)


def test_embedding_can_be_larger_than_the_tokenizer(tmp_path: Path) -> None:
    shape = dataclasses.replace(SHAPES["tiny"], vocab_size=4096)
    directory = build_family_model("qwen2.5", tmp_path, seed=1, shape=shape)
    model: Any = AutoModelForCausalLM.from_pretrained(str(directory))
    tok = AutoTokenizer.from_pretrained(str(directory))
    assert model.get_input_embeddings().weight.shape[0] == 4096 > len(tok)


def test_same_seed_same_weights_other_seed_other_weights(tmp_path: Path) -> None:
    a = build_family_model("phi3", tmp_path / "a", seed=3)
    b = build_family_model("phi3", tmp_path / "b", seed=3)
    c = build_family_model("phi3", tmp_path / "c", seed=4)
    weights = [(d / "model.safetensors").read_bytes() for d in (a, b, c)]
    assert weights[0] == weights[1] != weights[2]
    assert (a / "tokenizer.json").read_bytes() == (c / "tokenizer.json").read_bytes()


def test_bad_requests_name_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown model family 'qwen9'.*qwen2.5"):
        get_family("qwen9")
    with pytest.raises(ValueError, match="unknown model shape 'huge'.*tiny"):
        build_family_model("qwen3", tmp_path, seed=0, shape="huge")
    small = dataclasses.replace(SHAPES["tiny"], vocab_size=100)
    with pytest.raises(ValueError, match="vocab_size 100 is smaller than the tokenizer"):
        build_family_model("qwen3", tmp_path, seed=0, shape=small)


def test_fill_escapes_text_into_jinja_literals() -> None:
    assert fill("{{ $A }}", A="it's\na \\ b") == "{{ 'it\\'s\\na \\\\ b' }}"
    with pytest.raises(KeyError):
        fill("{{ $A }}", B="x")
