"""The families' chat templates in multi-turn use: where prompts are prefix-stable (turn k+1's
prompt starts with turn k's prompt followed by the ids the model generated), where they are not
(Qwen3's reasoning), and the published templates' quirks that a server must live with."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from fulmen_local.families import FAMILIES, FamilySpec, build_family_model
from fulmen_local.server.template import normalize_messages
from fulmen_local.server.tool_parsers import get_tool_parser
from jinja2 import TemplateError
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

torch.set_num_threads(1)

NAMES = sorted(FAMILIES)
CALL = ("calculator", {"expression": "37*48"})
ANSWER = "The answer is 1776."


def openai_call(name: str, arguments: dict[str, Any], call_id: str = "call_1") -> dict[str, Any]:
    """A tool call as an OpenAI client sends it back (arguments as a JSON string)."""
    return {"id": call_id, "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments)}}


TOOL = {
    "type": "function",
    "function": {
        "name": "calculator", "description": "Evaluate arithmetic",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}},
    },
}


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("family_templates")
    return {name: build_family_model(name, root / name, seed=0) for name in NAMES}


@pytest.fixture(scope="module")
def tokenizers(family_dirs: dict[str, Path]) -> dict[str, PreTrainedTokenizerBase]:
    return {name: AutoTokenizer.from_pretrained(str(d)) for name, d in family_dirs.items()}


def render(tok: Any, messages: list[dict[str, Any]], *,
           tools: list[dict[str, Any]] | None = None, prompt: bool = True, **kwargs: Any) -> str:
    """The text a server renders: messages normalised like the embedded server does."""
    text = tok.apply_chat_template(
        normalize_messages(messages), tools=tools, add_generation_prompt=prompt,
        tokenize=False, **{"date_string": "26 Jul 2024", **kwargs},
    )
    assert isinstance(text, str)
    return text


def encode(tok: Any, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=False)["input_ids"])


def generated(tok: PreTrainedTokenizerBase, spec: FamilySpec, text: str) -> list[int]:
    """The ids a trained model writes for ``text``: its tokens, then the end-of-turn token."""
    end = tok.convert_tokens_to_ids(spec.end_of_turn)
    assert isinstance(end, int)
    return [*encode(tok, text), end]


def opening(spec: FamilySpec) -> list[dict[str, Any]]:
    system = [] if spec.system_role == "unsupported" else [
        {"role": "system", "content": "You are a calculator agent."}
    ]
    return [*system, {"role": "user", "content": "What is 37*48?"}]


@pytest.mark.parametrize("name", NAMES)
def test_next_prompt_extends_the_previous_prompt_and_the_generated_ids(
    name: str, tokenizers: dict[str, PreTrainedTokenizerBase]
) -> None:
    spec, tok = FAMILIES[name], tokenizers[name]
    tools = [TOOL] if spec.supports_tools else None
    history = opening(spec)
    prompt = encode(tok, render(tok, history, tools=tools))
    if spec.format_tool_calls is not None:  # a tool loop: call, result, next prompt
        reply = generated(tok, spec, spec.format_tool_calls([CALL]))
        history += [
            {"role": "assistant", "content": None, "tool_calls": [openai_call(*CALL)]},
            {"role": "tool", "tool_call_id": "call_1", "content": "1776"},
        ]
        following = encode(tok, render(tok, history, tools=tools))
        assert following[: len(prompt) + len(reply)] == prompt + reply
        prompt = following
    reply = generated(tok, spec, ANSWER)  # then a new user message
    history += [
        {"role": "assistant", "content": ANSWER},
        {"role": "user", "content": "Thanks. And 2+2?"},
    ]
    following = encode(tok, render(tok, history, tools=tools))
    assert following[: len(prompt) + len(reply)] == prompt + reply


@pytest.mark.parametrize("name", [n for n in NAMES if FAMILIES[n].tool_parser])
def test_server_parser_reads_the_family_tool_call_text(name: str) -> None:
    spec = FAMILIES[name]
    assert spec.format_tool_calls is not None and spec.tool_parser is not None
    calls = [CALL] if name == "llama3" else [CALL, ("search", {"query": "café", "k": 3})]
    parsed = get_tool_parser(spec.tool_parser).parse(spec.format_tool_calls(calls))
    assert parsed is not None and parsed.content is None
    read = [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in parsed.tool_calls]
    assert read == calls


def _overfit(model: Any, prompt: list[int], target: list[int]) -> None:
    """Train ``model`` until greedy decoding after ``prompt`` yields ``target``."""
    ids = torch.tensor([prompt + target])
    labels = torch.tensor([[-100] * len(prompt) + target])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(400):
        out = model(input_ids=ids, labels=labels)
        predicted = out.logits[0, len(prompt) - 1 : -1].argmax(-1)
        if predicted.tolist() == target:
            break
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    model.eval()


def test_qwen3_reasoning_is_rendered_back_as_generated_in_the_current_turn_only(
    family_dirs: dict[str, Path], tokenizers: dict[str, PreTrainedTokenizerBase]
) -> None:
    spec, tok = FAMILIES["qwen3"], tokenizers["qwen3"]
    model: Any = AutoModelForCausalLM.from_pretrained(str(family_dirs["qwen3"]))
    question = [{"role": "user", "content": "What is 3 times 4?"}]
    prompt = encode(tok, render(tok, question, tools=[TOOL]))
    assert spec.format_tool_calls is not None
    call_text = spec.format_tool_calls([("calculator", {"expression": "3*4"})])
    _overfit(model, prompt, generated(
        tok, spec, "<think>\nThe tool multiplies.\n</think>\n\n" + call_text
    ))
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=40, do_sample=False)
    gen = out[0, len(prompt):].tolist()
    text = str(tok.decode(gen))
    assert text.startswith("<think>\n") and text.endswith("</tool_call><|im_end|>"), text
    # What a client sends back: reasoning split off (vLLM's qwen3 parser), the parsed calls.
    reasoning, rest = text.removesuffix("<|im_end|>").split("</think>")
    parsed = get_tool_parser("hermes").parse(rest)
    assert parsed is not None and parsed.content is None
    turn = {"role": "assistant", "content": None, "tool_calls": list(parsed.tool_calls),
            "reasoning_content": reasoning.removeprefix("<think>\n").removesuffix("\n")}
    result = {"role": "tool", "tool_call_id": "call_1", "content": "12"}

    # The current turn re-rendered is the generated sequence, token for token, whether the
    # reasoning comes back as reasoning_content or inside the content.
    for sent in (turn, {"role": "assistant", "content": text.removesuffix("<|im_end|>")}):
        whole = encode(tok, render(tok, [*question, sent], tools=[TOOL], prompt=False))
        assert whole[: len(prompt) + len(gen)] == prompt + gen
    # Within the tool loop the next prompt extends it, reasoning included.
    loop = encode(tok, render(tok, [*question, turn, result], tools=[TOOL]))
    assert loop[: len(prompt) + len(gen)] == prompt + gen
    # After a new user message the earlier turn's reasoning is dropped: that prompt holds the
    # turn without its think block, so it does not extend prompt + generated ids.
    later = [*question, turn, result, {"role": "assistant", "content": "It is 12."},
             {"role": "user", "content": "And 5 times 6?"}]
    after = encode(tok, render(tok, later, tools=[TOOL]))
    assert "The tool multiplies." not in tok.decode(after)
    assert after[: len(prompt) + len(gen)] != prompt + gen
    without_think = generated(tok, spec, call_text)
    assert after[: len(prompt) + len(without_think)] == prompt + without_think


def test_qwen3_without_thinking_is_not_prefix_stable_in_a_tool_loop(
    tokenizers: dict[str, PreTrainedTokenizerBase]
) -> None:
    spec, tok = FAMILIES["qwen3"], tokenizers["qwen3"]
    assert spec.format_tool_calls is not None
    question = [{"role": "user", "content": "What is 3 times 4?"}]
    first = render(tok, question, tools=[TOOL], enable_thinking=False)
    assert first.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    call = ("calculator", {"expression": "3*4"})
    reply = generated(tok, spec, spec.format_tool_calls([call]))
    history = [*question, {"role": "assistant", "content": None, "tool_calls": [openai_call(*call)]},
               {"role": "tool", "tool_call_id": "call_1", "content": "12"}]
    second = render(tok, history, tools=[TOOL], enable_thinking=False)
    # The empty think block of the generation prompt is not rendered for the earlier turn.
    assert "<|im_start|>assistant\n<tool_call>" in second
    assert encode(tok, second)[: len(encode(tok, first)) + len(reply)] != encode(tok, first) + reply


def test_published_template_quirks(tokenizers: dict[str, PreTrainedTokenizerBase]) -> None:
    user = {"role": "user", "content": "Hi"}
    system = {"role": "system", "content": "Be brief."}
    tool = {"role": "tool", "tool_call_id": "call_1", "content": "1776"}
    t = tokenizers
    # Qwen2.5 always has a system turn; Qwen3 only when given one; SmolLM2 has its own default.
    assert render(t["qwen2.5"], [user]).startswith(
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud."
    )
    assert render(t["qwen3"], [user]).startswith("<|im_start|>user\nHi<|im_end|>")
    assert render(t["smollm2"], [user]).startswith(
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM"
    )
    # Gemma 2 refuses a system message; a tool result where a user turn is due breaks the
    # user/model alternation;
    # Gemma 3 folds the system text into the first user turn.
    with pytest.raises(TemplateError, match="System role not supported"):
        render(t["gemma2"], [system, user])
    with pytest.raises(TemplateError, match="must alternate"):
        render(t["gemma3"], [user, {"role": "assistant", "content": "Calling."}, tool])
    assert render(t["gemma3"], [system, user]) == (
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
    )
    # Phi-3 silently leaves tool results out; Phi templates end a finished chat with EOS.
    assert "1776" not in render(t["phi3"], [user, tool])
    assert render(t["phi3"], [user], prompt=False).endswith("<|end|>\n<|endoftext|>")
    assert render(t["phi4-mini"], [user], prompt=False) == "<|user|>Hi<|end|><|endoftext|>"
    # Phi-4-mini's published way: tools as a JSON string on the system message.
    with_tools = {**system, "tools": '[{"name": "f"}]'}
    assert render(t["phi4-mini"], [with_tools, user]).startswith(
        '<|system|>Be brief.<|tool|>[{"name": "f"}]<|/tool|><|end|><|user|>Hi'
    )
    # Llama 3: a string tool result is rendered through tojson (quoted); one call per turn;
    # without date_string the date is today's.
    call = {"role": "assistant", "tool_calls": [openai_call(*CALL)]}
    assert '<|end_header_id|>\n\n"1776"<|eot_id|>' in render(t["llama3"], [user, call, tool])
    two = {"role": "assistant", "tool_calls": [openai_call(*CALL), openai_call(*CALL, "call_2")]}
    with pytest.raises(TemplateError, match="single tool-calls"):
        render(t["llama3"], [user, two])
    before = datetime.date.today()
    text = t["llama3"].apply_chat_template([user], tokenize=False)
    assert isinstance(text, str)
    dates = {d.strftime("%d %b %Y") for d in (before, datetime.date.today())}
    assert any(f"Today Date: {d}\n" in text for d in dates)
