"""One full GRPO step through the whole embedded stack for every model family, on CPU.

For each family a tiny random model (:func:`fulmen_local.families.build_family_model`) is the
``[model] path`` of a real :func:`fulmen_local.train.loop.run_training` run: an OpenAI-client
agent calls the embedded server through its episode's gateway URL (with the calculator tool
where the family's template supports tools), episodes are recorded, credited and trained on.
The reward is the parity of the reply's length — meaningless, but it differs within a group even
for a random model, so the GRPO update really runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from fulmen.config import parse_config
from fulmen.store import open_store
from fulmen.train import latest_checkpoint
from fulmen_local.families import FAMILIES, build_family_model
from fulmen_local.train.loop import run_training
from safetensors.torch import load_file
from transformers import AutoTokenizer

AGENT_MODULE = '''
from openai import OpenAI

TOOLS = [{
    "type": "function",
    "function": {
        "name": "calculator", "description": "Evaluate arithmetic",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}},
    },
}]


def messages(task):
    return [{"role": "user", "content": task.data["question"]}]


def solve(task, ctx):
    client = OpenAI(base_url=ctx.base_url, api_key=ctx.api_key, timeout=60.0, max_retries=0)
    extra = {"tools": TOOLS} if task.data["tools"] else {}
    reply = client.chat.completions.create(
        model="policy", messages=messages(task), max_tokens=16, **extra
    )
    message = reply.choices[0].message
    calls = [c.function.arguments for c in message.tool_calls or []]
    return (message.content or "") + "".join(calls)


def reward(task, output, ctx):
    return float(len(output or "") % 2)
'''
QUESTIONS = ("What is 37*48?", "What is 12+9?")


def _write_tasks(path: Path, tools: bool) -> Path:
    lines = [
        json.dumps({"id": f"q{i}", "data": {"question": q, "tools": tools}})
        for i, q in enumerate(QUESTIONS)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def agent_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "family_step_agent.py").write_text(AGENT_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "family_step_agent"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_one_grpo_step_trains_every_family(name: str, tmp_path: Path, agent_module: str) -> None:
    spec = FAMILIES[name]
    base = build_family_model(name, tmp_path / "model", seed=0)
    out = tmp_path / "run"
    config = parse_config(
        {
            "run": {"output_dir": str(out), "seed": 0},
            "agent": {"entry": f"{agent_module}:solve", "reward": f"{agent_module}:reward",
                      "concurrency": 8},
            "data": {"train": str(_write_tasks(tmp_path / "train.jsonl", spec.supports_tools))},
            "model": {"path": str(base)},
            "train": {"steps": 1, "tasks_per_step": 2, "group_size": 4, "max_tokens": 16,
                      "eval_every": 0, "learning_rate": 1e-3},
            "local": {"threads": 1, "device": "cpu"},
        },
        base_dir=str(tmp_path),
    )
    log: list[str] = []
    run_training(config, log=log.append)
    architecture = json.loads((base / "config.json").read_text())["architectures"][0]
    assert any(line.startswith(f"policy: {architecture} on cpu") for line in log), log

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    (step,) = [r for r in rows if r["kind"] == "train"]
    assert step["episodes"] == 8 and step["failed_episodes"] == 0
    assert step["reward_std"] > 0  # the groups had signal
    assert step["rows"] > 0 and step["num_tokens"] > 0 and step["grad_norm"] > 0
    checkpoint = latest_checkpoint(out / "checkpoints")
    assert checkpoint is not None and checkpoint.step == 1
    before = load_file(str(base / "model.safetensors"))
    after = load_file(str(checkpoint.path / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before)

    # The prompt ids recorded for an episode are the family's template rendered and tokenised
    # once (no second BOS, the tools shown where supported).
    tokenizer: Any = AutoTokenizer.from_pretrained(str(base))
    store = open_store(out / "episodes.db")
    try:
        episode = next(e for e in store.list_episodes() if e.task.id == "q0")
        (transition,) = store.transitions(episode.id)
    finally:
        store.close()
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTIONS[0]}],
        tools=[_tool()] if spec.supports_tools else None,
        add_generation_prompt=True, tokenize=False,
    )
    expected = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert list(transition.prompt_token_ids) == expected
    assert 0 < len(transition.response_token_ids) <= 16


def _tool() -> dict[str, Any]:
    """The agent module's tool."""
    return {
        "type": "function",
        "function": {
            "name": "calculator", "description": "Evaluate arithmetic",
            "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}},
        },
    }
