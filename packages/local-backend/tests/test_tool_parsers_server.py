"""Tool-call parsers in the running server: the 400s for tools it cannot handle, parser names at
construction and on the command line, and Llama 3's special-token call format end to end on a
model trained to emit it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import torch
from fulmen_local.model.build import build_tiny_model
from fulmen_local.model.tokenizer import build_tokenizer
from fulmen_local.server import TOOL_PARSER_NAMES, InferenceServer, UnknownToolParserError
from fulmen_local.server.__main__ import main
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

QUESTION: list[dict[str, Any]] = [{"role": "user", "content": "What is 3 times 4?"}]
CHAT: dict[str, Any] = {"model": "tiny", "messages": QUESTION, "max_tokens": 3}
CALCULATOR_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate arithmetic",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}},
    },
}
PYTHON_TAG = "<|python_tag|>"
LLAMA_CALL = '{"name": "calculator", "parameters": {"expression": "3*4"}}'
PREAMBLE = "Let me compute."  # before the tag: without it, the call would be found anyway


def _post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any] | str]:
    req = urllib.request.Request(
        f"{url}/v1/chat/completions",
        json.dumps(body).encode(),
        {"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            text = resp.read().decode()
            return resp.status, text if body.get("stream") else json.loads(text)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read().decode())


# ----------------------------------------------------------------------------- refusals


@pytest.fixture(scope="module")
def no_parser_url(random_model, tokenizer) -> Iterator[str]:
    with InferenceServer(random_model, tokenizer, model_name="tiny", tool_parser=None) as server:
        yield server.url


@pytest.mark.parametrize("stream", [False, True])
def test_tools_without_a_parser_are_a_400_naming_the_option(
    no_parser_url: str, stream: bool
) -> None:
    status, body = _post(no_parser_url, {**CHAT, "tools": [CALCULATOR_TOOL], "stream": stream})
    assert status == 400 and isinstance(body, dict)
    error = body["error"]
    assert list(error) == ["message", "type", "param", "code"]  # vLLM's error shape
    assert error["type"] == "BadRequestError" and error["code"] == 400
    assert error["param"] == "tools"
    assert "[local] tool_parser" in error["message"] and "--tool-call-parser" in error["message"]
    assert all(name in error["message"] for name in TOOL_PARSER_NAMES)


def test_a_server_without_a_parser_still_serves_requests_without_tool_calls(
    no_parser_url: str,
) -> None:
    for body in (CHAT, {**CHAT, "tools": [CALCULATOR_TOOL], "tool_choice": "none"}):
        status, reply = _post(no_parser_url, body)
        assert status == 200 and isinstance(reply, dict)
        assert reply["choices"][0]["message"].get("tool_calls") is None


def test_tools_with_a_template_that_ignores_them_are_a_400(random_model) -> None:
    tokenizer = build_tokenizer()
    tokenizer.chat_template = (  # like Gemma's: no tools anywhere
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
        "{% endfor %}<|im_start|>assistant\n"
    )
    with InferenceServer(random_model, tokenizer, model_name="tiny") as server:
        status, body = _post(server.url, {**CHAT, "tools": [CALCULATOR_TOOL]})
        assert status == 400 and isinstance(body, dict)
        message = body["error"]["message"]
        assert "chat template" in message and "tool_parser" in message
        status, _ = _post(server.url, CHAT)
        assert status == 200


def test_unknown_parser_name_fails_at_construction(random_model, tokenizer) -> None:
    with pytest.raises(UnknownToolParserError, match="expected one of hermes, llama3_json"):
        InferenceServer(random_model, tokenizer, model_name="tiny", tool_parser="qwen")


def test_cli_refuses_an_unknown_parser(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path), "--tool-call-parser", "qwen"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--tool-call-parser" in err and "llama3_json" in err and "none" in err


# ----------------------------------------------------------------------------- Llama 3 format


@pytest.fixture(scope="module")
def llama_tokenizer() -> PreTrainedTokenizerFast:
    """The reference tokenizer with Llama 3's ``<|python_tag|>`` as a special token."""
    tokenizer = build_tokenizer()
    tokenizer.add_tokens([PYTHON_TAG], special_tokens=True)
    return tokenizer


@pytest.fixture(scope="module")
def llama_tool_model(llama_tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    """A tiny model overfitted to answer the tool question with a sentence and a Llama 3 JSON
    call behind ``<|python_tag|>``."""
    model = build_tiny_model(llama_tokenizer, seed=0, preset="test")
    text = llama_tokenizer.apply_chat_template(
        QUESTION, tools=[CALCULATOR_TOOL], add_generation_prompt=True, tokenize=False
    )
    assert isinstance(text, str)
    prompt = list(llama_tokenizer(text, add_special_tokens=False)["input_ids"])
    target = PREAMBLE + PYTHON_TAG + LLAMA_CALL + str(llama_tokenizer.eos_token)
    target_ids = list(llama_tokenizer(target, add_special_tokens=False)["input_ids"])
    assert llama_tokenizer.convert_tokens_to_ids(PYTHON_TAG) in target_ids
    ids = torch.tensor([prompt + target_ids])
    labels = torch.tensor([[-100] * len(prompt) + target_ids])
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    for _ in range(200):
        loss = model(input_ids=ids, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < 0.01:
            break
    return model.eval()


@pytest.fixture(scope="module")
def llama_client(llama_tool_model, llama_tokenizer) -> Iterator[openai.OpenAI]:
    with InferenceServer(
        llama_tool_model, llama_tokenizer, model_name="tiny", tool_parser="llama3_json"
    ) as server:
        yield openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", timeout=60, max_retries=0)


def _name_and_arguments(call: Any) -> tuple[str, str]:
    """A tool call's (or a whole-call streamed delta's) function name and arguments."""
    return call.function.name, call.function.arguments


def _ask(client: openai.OpenAI, *, tools: bool, stream: bool, **extra: Any) -> tuple[Any, ...]:
    """``(content, [(name, arguments)], finish_reason)`` of a greedy answer."""
    kwargs: dict[str, Any] = {
        "model": "tiny",
        "messages": QUESTION,
        "temperature": 0.0,
        "max_tokens": 80,
        **({"tools": [CALCULATOR_TOOL]} if tools else {}),
        **extra,
    }
    if not stream:
        choice = client.chat.completions.create(**kwargs).choices[0]
        calls = [_name_and_arguments(c) for c in choice.message.tool_calls or []]
        return choice.message.content, calls, choice.finish_reason
    content, calls, finish = "", [], None
    for chunk in client.chat.completions.create(**kwargs, stream=True):
        for choice in chunk.choices:
            content += choice.delta.content or ""
            calls += [_name_and_arguments(c) for c in choice.delta.tool_calls or []]
            finish = choice.finish_reason or finish
    return content or None, calls, finish


@pytest.mark.parametrize("stream", [False, True])
def test_llama3_call_behind_a_special_token_is_parsed(
    llama_client: openai.OpenAI, stream: bool
) -> None:
    content, calls, finish = _ask(llama_client, tools=True, stream=stream)
    assert finish == "tool_calls" and content == PREAMBLE
    assert [(n, json.loads(a)) for n, a in calls] == [("calculator", {"expression": "3*4"})]


@pytest.mark.parametrize("stream", [False, True])
def test_llama3_text_reaches_the_client_without_the_special_token(
    llama_client: openai.OpenAI, stream: bool
) -> None:
    # tool_choice "none": tools shown, nothing parsed; plain text, special tokens skipped
    plain = _ask(llama_client, tools=True, stream=stream, tool_choice="none")
    assert plain == (PREAMBLE + LLAMA_CALL, [], "stop")
    # a call cut by a stop string is malformed: the same plain text, up to the stop string
    cut = LLAMA_CALL[: LLAMA_CALL.index("*")]
    cut_reply = _ask(llama_client, tools=True, stream=stream, stop=["*"])
    assert cut_reply == (PREAMBLE + cut, [], "stop")
