"""A run directory for the dashboard tests, written through the real store API: two training
steps of a planner/solver agent (tool calls, tool results, outcome and step rewards), a failed
episode, held-out evaluations of two tasks under policy versions 0 and 2, ``metrics.jsonl``
rows shaped like the local loop's, and a real (character-level) ``tokenizer.json`` built with
the ``tokenizers`` library, whose ids the recorded calls carry."""

from __future__ import annotations

import json
import string
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _observe_data import train_row, write_metrics
from fulmen.protocol import (
    Annotation,
    Episode,
    EpisodeStatus,
    Reward,
    Task,
    TerminationReason,
    Transition,
)
from fulmen.store.sqlite import SQLiteStore
from tokenizers import Tokenizer, models

__all__ = ["CREDIT_TOML", "DemoRun", "encode", "make_run"]

_CHARS = [c for c in string.printable if c not in "\x0b\x0c"]
_SPECIAL = ["<|im_start|>", "<|im_end|>"]

CREDIT_TOML = """
[agent]
entry = "agent:solve"
[data]
train = "data/train.jsonl"
[model]
path = "model"
[credit]
assigner = "grpo"
agents = ["solver"]
[alarms]
infra_failure_rate = 0.5
"""
"""A training config whose ``[credit]`` trains only the solver (the planner is masked) and whose
``[alarms]`` tolerate the run's one infrastructure failure in nine."""


def _tokenizer() -> Any:
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(["<unk>", *_CHARS])}, merges=[]))
    tok.add_special_tokens(_SPECIAL)
    return tok


def encode(text: str) -> list[int]:
    """``text``'s ids under the run's tokenizer (one per character, chat tokens special)."""
    return list(_tokenizer().encode(text).ids)


def _chat(messages: list[dict[str, Any]]) -> str:
    turns = "".join(f"<|im_start|>{m['role']}\n{m.get('content') or ''}<|im_end|>\n" for m in messages)
    return turns + "<|im_start|>assistant\n"


@dataclass(frozen=True, slots=True)
class DemoRun:
    """What :func:`make_run` wrote."""

    run_dir: Path
    store_path: Path
    tokenizer: Path
    config: Path
    """A config file whose ``[credit]`` trains only the solver."""


class _Writer:
    def __init__(self, store: SQLiteStore, start: float) -> None:
        self.store = store
        self.t = start

    def episode(
        self,
        episode_id: str,
        *,
        task: Task,
        group_id: str | None,
        calls: list[tuple[str | None, str, str | None]],
        reward: float | None,
        version: int,
        untrainable_last: bool = False,
        fail: TerminationReason | None = None,
    ) -> None:
        """``calls``: ``(agent, response text, tool name or None)``; a tool call is answered by
        a tool message (and an adapter annotation with its result) before the next call."""
        self.t += 1.0
        store = self.store
        store.add_episode(Episode(id=episode_id, task=task, group_id=group_id, created_at=self.t))
        store.update_episode(episode_id, status=EpisodeStatus.RUNNING)
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": "Use the calculator."},
            {"role": "user", "content": str(task.data["question"])},
        ]
        for seq, (agent, text, tool) in enumerate(calls):
            prompt = encode(_chat(messages))
            response = encode(text + "<|im_end|>")
            untrainable = untrainable_last and seq == len(calls) - 1
            tool_calls: tuple[dict[str, Any], ...] = ()
            if tool is not None:
                args = json.dumps({"expression": task.data["expression"]})
                tool_calls = (
                    {
                        "id": f"call-{episode_id}-{seq}",
                        "type": "function",
                        "function": {"name": tool, "arguments": args},
                    },
                )
            store.add_transition(
                Transition(
                    episode_id=episode_id,
                    seq=seq,
                    request_id=f"{episode_id}.{seq}",
                    agent=agent,
                    request_messages=tuple(messages),
                    response_message={
                        "role": "assistant",
                        "content": text,
                        "tool_calls": list(tool_calls),
                    },
                    tool_calls=tool_calls,
                    prompt_token_ids=() if untrainable else tuple(prompt),
                    response_token_ids=() if untrainable else tuple(response),
                    response_logprobs=None
                    if untrainable
                    else tuple(-(0.02 + 3.0 * ((i * 7) % 10) / 10) for i in range(len(response))),
                    finish_reason="tool_calls" if tool else "stop",
                    policy_version=version,
                    started_at=self.t,
                    ended_at=self.t + 0.2,
                    upstream_latency_s=0.15,
                    flags=("no_token_ids",) if untrainable else (),
                    metadata={"model": "policy"},
                )
            )
            messages.append({"role": "assistant", "content": text})
            if tool is not None:
                result = str(task.data["answer"])
                store.add_annotation(
                    Annotation(
                        episode_id=episode_id,
                        request_id=f"{episode_id}.{seq}",
                        framework="langchain",
                        agent=agent,
                        node="tools",
                        tool_results=(
                            {"tool_call_id": f"call-{episode_id}-{seq}", "name": tool, "output": result},
                        ),
                    )
                )
                messages.append({"role": "tool", "tool_call_id": f"call-{episode_id}-{seq}", "content": result})
        if fail is not None:
            store.update_episode(
                episode_id, status=EpisodeStatus.FAILED, termination=fail, error="upstream returned 503"
            )
            return
        if reward is not None:
            store.add_reward(Reward(episode_id=episode_id, value=reward))
            store.add_reward(Reward(episode_id=episode_id, value=0.5, name="format"))
            if len(calls) > 1:
                store.add_reward(Reward(episode_id=episode_id, value=0.25, step=0, agent=calls[0][0]))
        store.update_episode(
            episode_id,
            status=EpisodeStatus.SUCCEEDED,
            termination=TerminationReason.COMPLETED,
            metadata={"output": calls[-1][1]},
        )


def _task(task_id: str, a: int, b: int, split: str = "train") -> Task:
    return Task(
        id=task_id,
        data={"question": f"What is {a}*{b}?", "expression": f"{a}*{b}", "answer": a * b},
        split=split,
    )


def make_run(root: Path) -> DemoRun:
    """Write the run under ``root / "run"`` (see the module docstring)."""
    run = root / "run"
    (run / "checkpoints" / "step-000002").mkdir(parents=True)
    tokenizer = run / "checkpoints" / "step-000002" / "tokenizer.json"
    _tokenizer().save(str(tokenizer))
    (run / "checkpoints" / "latest").write_text("step-000002")
    config = root / "train.toml"
    config.write_text(CREDIT_TOML)
    store_path = run / "episodes.db"
    with SQLiteStore(store_path) as store:
        w = _Writer(store, time.time() - 600)
        t1 = _task("calc-1", 6, 7)
        for eid, answer, reward in (("ep-s1-a", "42", 1.0), ("ep-s1-b", "41", 0.0)):
            w.episode(
                eid,
                task=t1,
                group_id="step1:calc-1",
                calls=[("planner", "calculator(6*7)", "calculator"), ("solver", answer, None)],
                reward=reward,
                version=0,
                untrainable_last=eid == "ep-s1-b",
            )
        t2 = _task("calc-2", 12, 3)
        for eid in ("ep-s2-a", "ep-s2-b"):
            w.episode(
                eid,
                task=t2,
                group_id="step2:calc-2",
                calls=[("planner", "calculator(12*3)", "calculator"), ("solver", "36", None)],
                reward=1.0,
                version=1,
            )
        w.episode(
            "ep-s2-fail",
            task=t2,
            group_id="step2:calc-2",
            calls=[("planner", "calc", None)],
            reward=None,
            version=1,
            fail=TerminationReason.UPSTREAM_ERROR,
        )
        for version, good in ((0, False), (2, True)):
            for task_id, a, b in (("calc-eval-1", 9, 8), ("calc-eval-2", 5, 5)):
                answer = str(a * b) if good else "7"
                w.episode(
                    f"ep-eval-{task_id[-1]}-v{version}",
                    task=_task(task_id, a, b, split="eval"),
                    group_id=None,
                    calls=[(None, answer, None)],
                    reward=1.0 if good else 0.0,
                    version=version,
                )
    write_metrics(
        run / "metrics.jsonl",
        [
            {"kind": "eval", "step": 0, "success_rate": 0.0, "reward_mean": 0.0, "episodes": 2},
            train_row(1, reward_mean=0.5, rollout_tokens_per_s=900.0, dropped_groups=0, drift_breaks=0),
            train_row(
                2,
                reward_mean=1.0,
                success_rate=0.6667,
                rollout_tokens_per_s=1100.0,
                dropped_groups=1,
                drift_breaks=0,
                no_signal_groups=1,
                **{"batch/groups": 1, "batch/no_signal_groups": 1},
            ),
            {"kind": "eval", "step": 2, "success_rate": 1.0, "reward_mean": 1.0, "episodes": 2},
        ],
    )
    return DemoRun(run_dir=run, store_path=store_path, tokenizer=tokenizer, config=config)
