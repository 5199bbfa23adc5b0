"""Shared fixtures: the reference character tokenizer and tiny Llama models.

* ``tokenizer`` — :func:`fulmen_local.model.tokenizer.build_tokenizer` (ChatML + Hermes tools).
* ``random_model`` — the ``test`` preset (2 layers, hidden 64) with weights redrawn at a larger
  scale so greedy outputs vary from prompt to prompt (the default 0.02 init makes every prompt
  produce the same token, which would hide padding and position bugs).
* ``tool_model`` — the ``test`` preset overfitted for a few seconds on two conversations so
  greedy decoding *really* emits a Hermes tool call for :data:`TOOL_QUESTION` and a final
  answer once the tool result is in the history. Tool-call handling is thus tested on genuine
  model output, not on a test hook inside the server.

Both models are session-scoped: tests that change weights must ``copy.deepcopy`` them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from fulmen_local.model.build import build_tiny_model
from fulmen_local.model.tokenizer import build_tokenizer
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

# Tiny models: intra-op threads add overhead, and when other processes share the 2 cores a
# second thread made training steps ~100x slower (OpenMP oversubscription).
torch.set_num_threads(1)

CALCULATOR_TOOL: dict[str, Any] = {
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
TOOL_QUESTION: list[dict[str, Any]] = [{"role": "user", "content": "What is 3 times 4?"}]
TOOL_CALL_TEXT = '<tool_call>{"name": "calculator", "arguments": {"expression": "3*4"}}</tool_call>'
TOOL_HISTORY: list[dict[str, Any]] = [
    *TOOL_QUESTION,
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
ANSWER_TEXT = "The answer is 12."


def chat_ids(
    tokenizer: PreTrainedTokenizerFast,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None = None,
) -> list[int]:
    """Prompt ids the server builds for ``messages`` (template, no extra special tokens)."""
    text = tokenizer.apply_chat_template(
        messages, tools=tools, add_generation_prompt=True, tokenize=False  # pyright: ignore[reportArgumentType]  # list is invariant; transformers wants list[dict | Callable]
    )
    assert isinstance(text, str)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


@dataclass(frozen=True)
class ToolCase:
    """The conversations ``tool_model`` was trained on."""

    tool: dict[str, Any]
    question: list[dict[str, Any]]
    call_text: str
    history: list[dict[str, Any]]
    answer: str


@pytest.fixture(scope="session")
def tool_case() -> ToolCase:
    return ToolCase(CALCULATOR_TOOL, TOOL_QUESTION, TOOL_CALL_TEXT, TOOL_HISTORY, ANSWER_TEXT)


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    return build_tokenizer()


@pytest.fixture(scope="session")
def prompt_ids(
    tokenizer: PreTrainedTokenizerFast,
) -> Callable[..., list[int]]:
    """``prompt_ids(messages, tools=None)``: the ids the server builds for a chat request."""

    def build(
        messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> list[int]:
        return chat_ids(tokenizer, messages, tools)

    return build


@pytest.fixture(scope="session")
def random_model(tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    model = build_tiny_model(tokenizer, seed=0, preset="test")
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.15)
    return model.eval()


@pytest.fixture(scope="session")
def tool_model(tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    model = build_tiny_model(tokenizer, seed=0, preset="test")
    eos = tokenizer.eos_token
    assert isinstance(eos, str)
    examples = [
        (chat_ids(tokenizer, TOOL_QUESTION, [CALCULATOR_TOOL]), TOOL_CALL_TEXT + eos),
        (chat_ids(tokenizer, TOOL_HISTORY, [CALCULATOR_TOOL]), ANSWER_TEXT + eos),
    ]
    batches = []
    for prompt, target in examples:
        target_ids = list(tokenizer(target, add_special_tokens=False)["input_ids"])
        ids = torch.tensor([prompt + target_ids])
        labels = torch.tensor([[-100] * len(prompt) + target_ids])
        batches.append((ids, labels))
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    for _ in range(200):
        loss = sum((model(input_ids=i, labels=lab).loss for i, lab in batches), torch.tensor(0.0))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if loss.item() < 0.01:
            break
    return model.eval()


@pytest.fixture
def fresh_random_model(random_model: LlamaForCausalLM) -> Iterator[LlamaForCausalLM]:
    """A private copy of ``random_model`` (for tests that change weights)."""
    yield copy.deepcopy(random_model)
