"""Realistic run data for the observe tests: a store with tool-using, multi-agent, rewarded and
failed episodes, and ``metrics.jsonl`` rows shaped like the local loop's."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

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

__all__ = ["add_failed_episode", "add_tool_episode", "train_row", "write_metrics"]


def _call(
    episode_id: str, seq: int, *, agent: str | None, t: float, tool: str | None, answer: str = ""
) -> Transition:
    calls: tuple[dict[str, Any], ...] = ()
    if tool is not None:
        calls = (
            {
                "id": f"call_{episode_id}_{seq}",
                "type": "function",
                "function": {"name": tool, "arguments": '{"expression": "6*7"}'},
            },
        )
    messages: list[dict[str, Any]] = [{"role": "user", "content": "what is 6*7?"}]
    if seq > 0:
        messages.append({"role": "assistant", "content": None, "tool_calls": []})
        messages.append(
            {"role": "tool", "tool_call_id": f"call_{episode_id}_{seq - 1}", "content": "42"}
        )
    return Transition(
        episode_id=episode_id,
        seq=seq,
        request_id=f"{episode_id}.{seq}",
        agent=agent,
        request_messages=tuple(messages),
        response_message={"role": "assistant", "content": answer, "tool_calls": list(calls)},
        tool_calls=calls,
        prompt_token_ids=tuple(range(10 + seq * 5)),
        response_token_ids=tuple(range(4 + seq)),
        response_logprobs=tuple(-0.5 for _ in range(4 + seq)),
        finish_reason="tool_calls" if tool else "stop",
        policy_version=3,
        started_at=t,
        ended_at=t + 0.5,
        metadata={"model": "policy", "params": {"temperature": 1.0, "max_tokens": 96}},
    )


def add_tool_episode(
    store: SQLiteStore,
    episode_id: str,
    *,
    start: float | None = None,
    reward: float = 1.0,
    agents: tuple[str | None, str | None] = ("planner", "solver"),
    tool_error: bool = False,
    group_id: str | None = "step1-g0",
) -> Episode:
    """Two calls: the first (``agents[0]``) asks for the ``calculator`` tool, the second
    (``agents[1]``) answers after the tool message. Outcome ``reward`` plus a ``format`` 0.5
    dimension and a step-0 reward; an adapter annotation records the tool result. Calls are
    timed from ``start`` (default: a few seconds ago)."""
    start = time.time() - 5 if start is None else start
    task = Task(id=f"task-{episode_id}", data={"q": "6*7"})
    store.add_episode(Episode(id=episode_id, task=task, group_id=group_id, created_at=start))
    store.update_episode(episode_id, status=EpisodeStatus.RUNNING)
    store.add_transition(_call(episode_id, 0, agent=agents[0], t=start + 1, tool="calculator"))
    store.add_transition(_call(episode_id, 1, agent=agents[1], t=start + 3, tool=None, answer="42"))
    result: dict[str, Any] = {"tool_call_id": f"call_{episode_id}_0", "name": "calculator"}
    result.update({"error": "division by zero"} if tool_error else {"output": "42"})
    store.add_annotation(
        Annotation(
            episode_id=episode_id,
            request_id=f"{episode_id}.0",
            framework="langchain",
            agent=agents[0],
            node="tools",
            tool_results=(result,),
        )
    )
    store.add_reward(Reward(episode_id=episode_id, value=reward, created_at=start + 4))
    store.add_reward(Reward(episode_id=episode_id, value=0.5, name="format", created_at=start + 4))
    store.add_reward(Reward(episode_id=episode_id, value=0.25, step=0, created_at=start + 4))
    return store.update_episode(episode_id, status=EpisodeStatus.SUCCEEDED)


def add_failed_episode(
    store: SQLiteStore,
    episode_id: str,
    reason: TerminationReason = TerminationReason.UPSTREAM_ERROR,
) -> Episode:
    """An episode that failed after one call, for ``reason``."""
    store.add_episode(Episode(id=episode_id, task=Task(id=f"task-{episode_id}")))
    store.update_episode(episode_id, status=EpisodeStatus.RUNNING)
    store.add_transition(_call(episode_id, 0, agent="solver", t=time.time() - 1, tool=None))
    status = (
        EpisodeStatus.TIMED_OUT if reason is TerminationReason.TIMEOUT else EpisodeStatus.FAILED
    )
    return store.update_episode(
        episode_id, status=status, termination=reason, error="upstream returned 503"
    )


def train_row(step: int, **values: Any) -> dict[str, Any]:
    """A ``train`` row of the metrics schema (:mod:`fulmen.train.schema`) with healthy
    defaults, ``values`` overriding them."""
    row: dict[str, Any] = {
        "kind": "train",
        "step": step,
        "reward_mean": 0.5,
        "reward_std": 0.4,
        "success_rate": 0.5,
        "episodes": 16,
        "failed_episodes": 0,
        "infra_failed_episodes": 0,
        "tool_call_rate": 0.4,
        "entropy": 0.8,
        "kl": 0.01,
        "clip_fraction": 0.02,
        "grad_norm": 0.3,
        "no_signal_groups": 1,
        "dropped_groups": 1,
        "batch/groups": 4,
        "batch/no_signal_groups": 1,
        "batch/dropped_groups_no_signal": 1,
        "batch/merged_calls": 0,
        "batch/merge_breaks": 0,
        "batch/merge_breaks_context_change": 0,
        "batch/merge_breaks_retokenisation": 0,
        "batch/merge_breaks_template_change": 0,
        "batch/merge_breaks_other": 0,
    }
    row.update(values)
    return row


def write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` as ``metrics.jsonl``."""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
