"""The episode page's JSON: transcript, tool calls and results, rewards, credit and tokens.

Pure functions over an :class:`~fulmen.protocol.EpisodeRecord` (adapter annotations merged),
its :class:`~fulmen.observe.dashboard.credit.EpisodeCredit` and an optional
:class:`~fulmen.observe.dashboard.tokens.TokenText`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from fulmen.observe.dashboard.credit import EpisodeCredit
from fulmen.observe.dashboard.tokens import TokenText, token_view
from fulmen.observe.summary import EpisodeSummary, call_policy, reward_label, summarize
from fulmen.protocol import EpisodeRecord, Transition

__all__ = ["episode_detail", "new_messages", "summary_json"]


def summary_json(summary: EpisodeSummary) -> dict[str, Any]:
    """An :class:`~fulmen.observe.summary.EpisodeSummary` as JSON (tuples as lists)."""
    data = asdict(summary)
    data["reward_parts"] = [{"label": label, "value": value} for label, value in summary.reward_parts]
    return data


def _same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Two chat messages are the same turn (role and text; tool calls re-serialised differ)."""
    return a.get("role") == b.get("role") and (a.get("content") or "") == (b.get("content") or "")


def new_messages(transition: Transition, previous: Transition | None) -> tuple[int, list[Any]]:
    """The messages of ``transition``'s request that ``previous`` did not already show.

    ``previous`` is the same agent's previous call: its request plus its response are the
    context this call repeats. Returns ``(repeated, new)``: how many leading messages were
    repeated, and the rest.
    """
    messages = list(transition.request_messages)
    if previous is None:
        return 0, messages
    before = [*previous.request_messages, previous.response_message]
    n = 0
    while n < min(len(messages), len(before)) and _same(messages[n], before[n]):
        n += 1
    return n, messages[n:]


def _tool_calls(transition: Transition) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for call in transition.tool_calls:
        function: Any = call.get("function")
        fn: Mapping[str, Any] = function if isinstance(function, Mapping) else {}
        out.append({"id": call.get("id"), "name": fn.get("name"), "arguments": fn.get("arguments")})
    return out


def _tool_results(transition: Transition) -> list[Any]:
    results: Any = transition.metadata.get("tool_results", ())
    return list(results) if isinstance(results, list | tuple) else []


def _call(
    t: Transition,
    previous: Transition | None,
    credit: EpisodeCredit,
    step_rewards: Sequence[dict[str, Any]],
    text: TokenText | None,
) -> dict[str, Any]:
    repeated, fresh = new_messages(t, previous)
    call_credit = credit.calls.get(t.seq)
    masked = call_credit is not None and not call_credit.trains
    return {
        "seq": t.seq,
        "request_id": t.request_id,
        "agent": t.agent,
        "node": t.metadata.get("node"),
        "framework": t.metadata.get("framework"),
        "finish_reason": t.finish_reason,
        "policy": call_policy(t),
        "policy_version": t.policy_version,
        "latency_s": t.upstream_latency_s,
        "flags": list(t.flags),
        "repeated_messages": repeated,
        "messages": fresh,
        "response": dict(t.response_message),
        "tool_calls": _tool_calls(t),
        "tool_results": _tool_results(t),
        "step_rewards": list(step_rewards),
        "trains": None if call_credit is None else call_credit.trains,
        "advantage": None if call_credit is None else call_credit.advantage,
        "skip_reason": None if call_credit is None else call_credit.skip_reason,
        "credit": credit.note if call_credit is None else call_credit.explanation,
        "masked": masked,
        "tokens": token_view(t, text),
    }


def episode_detail(
    record: EpisodeRecord, credit: EpisodeCredit, text: TokenText | None
) -> dict[str, Any]:
    """The episode page of ``record``.

    Returns ``{"episode", "summary", "rewards", "credit", "calls", "tokens"}``: ``calls`` has one
    entry per LLM call (``seq`` order) with the messages new to it, its response, tool calls
    and their results, the step rewards it earned, the policy that served it (``policy``: its
    name, ``"(base)"`` for the frozen base, None for a run without ``[[policy]]``) and the
    version (``policy_version``), whether it trains (``trains`` True, with its
    advantage), is masked (``trains`` False, ``masked`` True, with the reason) or is outside
    any training group (``trains`` None: held-out evaluation, a bare gateway), and its tokens
    (:func:`~fulmen.observe.dashboard.tokens.token_view`); ``tokens`` counts prompt, response,
    trained and masked response tokens.
    """
    e = record.episode
    summary = summarize(record)
    rewards = [
        {
            "label": reward_label(r),
            "value": r.value,
            "name": r.name,
            "step": r.step,
            "agent": r.agent,
            "created_at": r.created_at,
            "metadata": dict(r.metadata),
        }
        for r in record.rewards
    ]
    last: dict[str | None, Transition] = {}
    calls: list[dict[str, Any]] = []
    for t in record.transitions:
        steps = [r for r in rewards if r["step"] == t.seq]
        calls.append(_call(t, last.get(t.agent), credit, steps, text))
        last[t.agent] = t
    def response_tokens(which: bool | None) -> int:
        return sum(len(c["tokens"]["response"]["ids"]) for c in calls if c["trains"] is which)

    duration = (
        e.finished_at - e.started_at if e.finished_at is not None and e.started_at is not None else None
    )
    return {
        "episode": {
            "id": e.id,
            "task_id": e.task.id,
            "task_data": dict(e.task.data),
            "split": e.task.split,
            "attempt": e.attempt,
            "status": e.status.value,
            "termination": e.termination.value if e.termination else None,
            "error": e.error,
            "group_id": e.group_id,
            "policy_version": summary.policy_version,
            "created_at": e.created_at,
            "started_at": e.started_at,
            "finished_at": e.finished_at,
            "duration_s": duration,
            "output": e.metadata.get("output"),
            "metadata": {k: v for k, v in e.metadata.items() if k != "output"},
        },
        "summary": summary_json(summary),
        "rewards": rewards,
        "credit": {"group_key": credit.group_key, "note": credit.note},
        "calls": calls,
        "tokens": {
            "prompt": sum(len(c["tokens"]["prompt"]["ids"]) for c in calls),
            "response": sum(len(c["tokens"]["response"]["ids"]) for c in calls),
            "trained_response": response_tokens(True),
            "masked_response": response_tokens(False),
        },
    }
