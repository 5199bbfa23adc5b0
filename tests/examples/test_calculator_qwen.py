"""The Qwen calculator example's smoke config: a random Qwen2.5-family model with its byte-level
BPE tokenizer and ChatML/Hermes template, warm-started for a few steps, then one GRPO step on
LoRA adapters through the whole stack (agent, gateway, embedded server, store, trainer)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _smoke import run_smoke
from fulmen_local.model.load import load_causal_lm
from fulmen_local.model.lora import adapter_base, is_adapter_dir


@pytest.mark.slow
def test_smoke_config_trains_lora_on_a_qwen_model(tmp_path: Path) -> None:
    run = run_smoke("calculator_qwen", tmp_path)
    base = tmp_path / "base"
    info = json.loads((base / "warmstart.json").read_text())
    assert info["model_type"] == "qwen2" and info["steps_run"] == 3 and info["shared_prefix"]
    model, tokenizer = load_causal_lm(base)
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert "{% generation %}" not in str(tokenizer.chat_template)  # masks came from prefix renders

    assert [r["step"] for r in run.train] == [1]
    assert run.train[0]["episodes"] == 8 and run.train[0]["failed_episodes"] == 0
    assert [r["step"] for r in run.evals] == [0, 1]
    assert all(r["episodes"] == 4 for r in run.evals)

    checkpoint = run.out / "checkpoints" / "step-000001"
    assert is_adapter_dir(checkpoint) and not (checkpoint / "model.safetensors").exists()
    assert adapter_base(checkpoint) == str(base)

    assert run.transitions and all(t.trainable for t in run.transitions)
    prompt = str(tokenizer.decode(list(run.transitions[0].prompt_token_ids)))
    assert prompt.startswith("<|im_start|>system\nUse the calculator.\n\n# Tools")
    assert prompt.endswith("<|im_start|>user\n" + run.transitions[0].request_messages[1]["content"]
                           + "<|im_end|>\n<|im_start|>assistant\n")
