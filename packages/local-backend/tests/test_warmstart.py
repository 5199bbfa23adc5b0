"""Tests of the warm start (demonstrations, determinism) and the in-process calculator rollout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from fulmen_local.families import build_family_model, build_family_tokenizer
from fulmen_local.model import sampling
from fulmen_local.model.build import build_tiny_model, load_model
from fulmen_local.model.load import load_causal_lm
from fulmen_local.model.tokenizer import EOS_TOKEN, build_tokenizer, format_tool_call
from fulmen_local.model.warmstart import make_demos, render_demo, warm_start
from fulmen_local.tasks import calculator_rollout
from fulmen_local.tasks.calculator import generate_problems

torch.set_num_threads(2)
TOK = build_tokenizer()


def _text(ids: list[int]) -> str:
    return str(TOK.decode(ids))


def test_good_demo_weights_copied_characters() -> None:
    problem = generate_problems(1, seed=3)[0]
    demo = render_demo(TOK, problem, copy_weight=10.0)
    text = _text(demo.input_ids)
    assert demo.uses_tool
    assert format_tool_call("calculator", {"expression": problem["expression"]}) in text
    heavy = "".join(_text([i]) for i, w in zip(demo.input_ids, demo.weights, strict=True) if w == 10.0)
    assert heavy == f'{problem["expression"]}"{problem["answer"]}.'
    assistant = _text([i for i, w in zip(demo.input_ids, demo.weights, strict=True) if w > 0])
    assert assistant.endswith(f"The answer is {problem['answer']}.{EOS_TOKEN}")
    assert "What is" not in assistant and "1776" not in assistant


def test_bad_demo_guesses_wrong_without_tool() -> None:
    problem = generate_problems(1, seed=3)[0]
    demo = render_demo(TOK, problem, guess=12345, copy_weight=10.0)
    assert not demo.uses_tool
    assert set(demo.weights) == {0.0, 1.0}
    assert "<tool_call>" not in _text(demo.input_ids)
    demos = make_demos(TOK, count=40, seed=0, bad_fraction=0.25, exclude=set())
    assert sum(not d.uses_tool for d in demos) == 10
    for d in demos:
        if not d.uses_tool:
            text = _text(d.input_ids)
            question = text.split("What is ")[1].split("?")[0]
            stated = int(text.rsplit("The answer is ", 1)[1].split(".")[0])
            assert stated != eval(question)
    with pytest.raises(ValueError, match="bad_fraction"):
        make_demos(TOK, count=4, seed=0, bad_fraction=1.5, exclude=set())


def test_warm_start_is_deterministic_and_loadable(tmp_path: Path) -> None:
    options: dict[str, Any] = {
        "seed": 1, "steps": 3, "num_demos": 32, "batch_size": 4, "preset": "test", "log": None,
    }
    a = warm_start(tmp_path / "a", **options)
    b = warm_start(tmp_path / "b", **options)
    info = json.loads((a / "warmstart.json").read_text())
    assert info["steps_run"] == 3 and info["preset"] == "test"
    model_a, tok_a = load_model(a)
    model_b, _ = load_model(b)
    for pa, pb in zip(model_a.parameters(), model_b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)
    assert tok_a.chat_template == TOK.chat_template
    with pytest.raises(ValueError, match="guess_phase"):
        bad: dict[str, Any] = {**options, "guess_phase": 2.0}
        warm_start(tmp_path / "c", **bad)


def _scripted_sampler(script: list[str]) -> Any:
    """A stand-in for sample_batch that answers turn k of every episode with script[k]."""

    def fake(model: Any, prompts: list[list[int]], **kwargs: Any) -> list[sampling.Sample]:
        out = []
        for prompt in prompts:
            turn = TOK.decode(prompt).count("<|im_start|>assistant") - 1
            ids = TOK.encode(script[turn] + EOS_TOKEN)
            out.append(sampling.Sample(token_ids=ids, logprobs=[-0.1] * len(ids), finish_reason="stop"))
        return out

    return fake


def test_rollout_runs_the_tool_and_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    problem = generate_problems(1, seed=9)[0]
    call = format_tool_call("calculator", {"expression": problem["expression"]})
    monkeypatch.setattr(
        calculator_rollout, "sample_batch", _scripted_sampler([call, f"The answer is {problem['answer']}."])
    )
    model = build_tiny_model(TOK, seed=0, preset="test")
    (episode,) = calculator_rollout.run_episodes(model, TOK, [problem], temperature=1.0)
    assert episode.reward == 1.0 and episode.tool_calls == 1 and episode.error is None
    assert [m["role"] for m in episode.messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert episode.messages[3]["content"] == str(problem["answer"])
    assert len(episode.calls) == 2
    first, second = episode.calls
    assert second.prompt_ids[: len(first.prompt_ids) + len(first.response_ids)] == (
        first.prompt_ids + first.response_ids
    )
    assert episode.prefix_mismatches == 0


def test_rollout_scores_guesses_and_broken_calls_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    problem = generate_problems(1, seed=9)[0]
    model = build_tiny_model(TOK, seed=0, preset="test")
    monkeypatch.setattr(calculator_rollout, "sample_batch", _scripted_sampler(["The answer is 5."]))
    (guess,) = calculator_rollout.run_episodes(model, TOK, [problem], temperature=1.0)
    assert guess.reward == 0.0 and guess.tool_calls == 0 and len(guess.calls) == 1
    monkeypatch.setattr(calculator_rollout, "sample_batch", _scripted_sampler(["<tool_call>{oops</tool_call>"]))
    (broken,) = calculator_rollout.run_episodes(model, TOK, [problem], temperature=1.0)
    assert broken.reward == 0.0 and broken.tool_calls == 0
    assert broken.final_text == "<tool_call>{oops</tool_call>"
    lucky = f'<tool_call>{{"name": "calculator"}} {problem["answer"]}</tool_call>'
    monkeypatch.setattr(calculator_rollout, "sample_batch", _scripted_sampler([lucky]))
    (parsed_as_text,) = calculator_rollout.run_episodes(model, TOK, [problem], temperature=1.0)
    assert parsed_as_text.reward == 1.0 and parsed_as_text.tool_calls == 0


# -- a real family's tokenizer (byte-level BPE, no {% generation %} blocks) -----------------


def test_qwen_demo_trains_the_assistant_turns_and_weights_the_copied_characters() -> None:
    """Under byte-level BPE the copied text's own tokens are not the tokens it has in context
    (the closing quote merges with the braces), so copies are found by character offsets."""
    tok = build_family_tokenizer("qwen2.5")
    problem = generate_problems(1, seed=3)[0]
    expression, answer = problem["expression"], problem["answer"]
    demo = render_demo(tok, problem, copy_weight=10.0)
    pairs = list(zip(demo.input_ids, demo.weights, strict=True))
    assistant = "".join(str(tok.decode([i])) for i, w in pairs if w > 0)
    call = json.dumps({"name": "calculator", "arguments": {"expression": expression}})
    assert assistant == f"<tool_call>\n{call}\n</tool_call><|im_end|>The answer is {answer}.<|im_end|>"
    heavy = [str(tok.decode([i])) for i, w in pairs if w == 10.0]
    text = "".join(heavy)
    assert text.startswith(f'{expression}"') and text.endswith(f"{answer}.")
    assert len(text) <= len(expression) + len(str(answer)) + 2 + 3  # only the copies' tokens
    guess = render_demo(tok, problem, guess=12345, copy_weight=10.0)
    assert set(guess.weights) == {0.0, 1.0}
    assert "".join(str(tok.decode([i])) for i, w in zip(guess.input_ids, guess.weights, strict=True) if w) == (
        "The answer is 12345.<|im_end|>"
    )


def test_warm_start_trains_the_model_it_is_given(tmp_path: Path) -> None:
    init = build_family_model("qwen2.5", tmp_path / "init", seed=0, shape="tiny")
    model, tok = load_causal_lm(init)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    options: dict[str, Any] = {"seed": 1, "steps": 2, "num_demos": 16, "batch_size": 4, "log": None}
    threads = torch.get_num_threads()
    out = warm_start(
        tmp_path / "ws", model=model, tokenizer=tok, shared_prefix=True, threads=threads + 1,
        **options,
    )
    assert torch.get_num_threads() == threads  # restored
    info = json.loads((out / "warmstart.json").read_text())
    assert info["model_type"] == "qwen2" and info["shared_prefix"] is True and "preset" not in info
    loaded, loaded_tok = load_causal_lm(out)
    assert type(loaded).__name__ == "Qwen2ForCausalLM"
    assert loaded_tok.chat_template == tok.chat_template
    changed = [k for k, v in loaded.state_dict().items() if not torch.equal(v, before[k])]
    assert changed and all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())
    with pytest.raises(ValueError, match="both model and tokenizer"):
        warm_start(tmp_path / "half", model=model, **options)
