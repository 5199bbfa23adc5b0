"""The tool-chain example: the agent against the test upstream through a real gateway (its
short prompts, its tool's observations, the strict reward), and the smoke config training."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from _smoke import REPO, run_smoke
from fulmen import Task
from fulmen_testkit import MODEL, KitStack
from fulmen_testkit.vllm_double.generation import RequestParams

if str(REPO) not in sys.path:  # ``examples`` is a top-level package of the repository
    sys.path.insert(0, str(REPO))

from examples.tool_chain import agent as example


def _call(key: str) -> str:
    return "<tool_call>\n" + json.dumps({"name": "get", "arguments": {"key": key}}) + "\n</tool_call>"


def _follower(typo_first: bool = False) -> Any:
    """A scripted model that follows the chain: the question's key first, then the key the last
    tool result names, then the answer (with ``typo_first``, a wrong key on its first call)."""
    state = {"typo": typo_first}

    def respond(
        messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]], params: RequestParams
    ) -> str:
        last = str(messages[-1].get("content") or "")
        if messages[-1]["role"] == "user":
            key = last.removeprefix("Find the value of ").rstrip(".")
            if state["typo"]:
                state["typo"] = False
                return _call(key[::-1] + "q")
            return _call(key)
        if last.startswith("see "):
            return _call(last.removeprefix("see "))
        if last.startswith("error:"):
            return _call(str(messages[1]["content"]).removeprefix("Find the value of ").rstrip("."))
        return f"The answer is {last.removeprefix('value ')}."

    return respond


def _run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, responder: Any) -> tuple[Any, list[Any], Any]:
    problem = next(p for p in example.eval_tasks() if len(p["keys"]) == 4)
    monkeypatch.setattr(example, "MODEL_NAME", MODEL)
    task = Task(id=problem["id"], data=problem)
    with KitStack(tmp_path, responder=responder) as stack:
        result = stack.run(example.solve, [task])[0]
        transitions = stack.store.transitions(result.episode.id)
    return result, transitions, task


def test_agent_follows_a_four_key_chain_with_short_prompts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four dependent lookups and the answer: five recorded calls, each prompt holding only the
    system prompt, the question and the latest exchange; the stated answer scores 1."""
    result, transitions, task = _run(tmp_path, monkeypatch, _follower())
    assert result.ok and result.output == f"The answer is {task.data['answer']}."
    assert example.reward(task, result.output, None) == 1.0  # type: ignore[arg-type]
    assert len(transitions) == 5
    roles = [[m["role"] for m in t.request_messages] for t in transitions]
    assert roles == [["system", "user"]] + [["system", "user", "assistant", "tool"]] * 4
    observed = [t.request_messages[-1]["content"] for t in transitions[1:]]
    assert observed == [task.data["store"][k] for k in task.data["keys"]]


def test_a_mistyped_key_is_an_observation_and_the_chain_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, transitions, task = _run(tmp_path, monkeypatch, _follower(typo_first=True))
    assert transitions[1].request_messages[-1]["content"].startswith("error: no key")
    assert len(transitions) == 6 and result.output == f"The answer is {task.data['answer']}."


def test_recent_keeps_the_question_and_the_latest_turn_only() -> None:
    call = {"role": "assistant", "content": None, "tool_calls": []}
    history = [{"role": "system"}, {"role": "user"}, call, {"role": "tool", "content": "see a"},
               {**call, "n": 2}, {"role": "tool", "content": "see b"}, {"role": "tool", "content": "x"}]
    assert example.recent(history[:2]) == history[:2]
    assert example.recent(history) == [*history[:2], *history[4:]]


@pytest.mark.slow
def test_smoke_config_trains_with_gigpo(tmp_path: Path) -> None:
    run = run_smoke("tool_chain", tmp_path)
    assert [r["step"] for r in run.train] == [1, 2]
    assert all(r["episodes"] == 16 and r["failed_episodes"] == 0 for r in run.train)
    assert all(0.0 < r["gigpo/step_groups"] <= 1.0 for r in run.train)
    assert [r["step"] for r in run.evals] == [0, 1, 2]
    assert run.transitions and all(len(t.request_messages) in (2, 4) for t in run.transitions)
