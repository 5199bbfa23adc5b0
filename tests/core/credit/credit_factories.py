"""Builders of protocol records for the credit and batch tests (plain functions, no fixtures)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fulmen.protocol import (
    Episode,
    EpisodeRecord,
    EpisodeStatus,
    Reward,
    Task,
    TerminationReason,
    Transition,
)

__all__ = ["call", "episode", "outcome", "record", "simple_group", "step"]


def episode(
    eid: str,
    *,
    group: str | None = "g",
    task: str = "t",
    status: EpisodeStatus = EpisodeStatus.SUCCEEDED,
    termination: TerminationReason | None = TerminationReason.COMPLETED,
    policy_version: int | None = None,
) -> Episode:
    return Episode(
        id=eid,
        task=Task(id=task),
        group_id=group,
        status=status,
        termination=termination,
        policy_version=policy_version,
    )


def call(
    eid: str,
    seq: int,
    *,
    agent: str | None = None,
    prompt: Sequence[int] = (1, 2, 3),
    response: Sequence[int] = (7, 8),
    logprobs: Sequence[float] | bool | None = True,
    messages: Sequence[Mapping[str, Any]] = (),
    flags: Sequence[str] = (),
    metadata: Mapping[str, Any] | None = None,
    policy_version: int | None = None,
) -> Transition:
    """A transition; ``logprobs=True`` gives ``-0.1 * (i + 1)`` per response token."""
    if logprobs is True:
        lp: tuple[float, ...] | None = tuple(-0.1 * (i + 1) for i in range(len(response)))
    elif logprobs is False or logprobs is None:
        lp = None
    else:
        lp = tuple(logprobs)
    return Transition(
        episode_id=eid,
        seq=seq,
        request_id=f"{eid}.{seq}",
        agent=agent,
        prompt_token_ids=tuple(prompt),
        response_token_ids=tuple(response),
        response_logprobs=lp,
        request_messages=tuple(messages),
        flags=tuple(flags),
        metadata=dict(metadata or {}),
        policy_version=policy_version,
    )


def outcome(eid: str, value: float, *, name: str | None = None, agent: str | None = None) -> Reward:
    return Reward(episode_id=eid, value=value, name=name, agent=agent)


def step(
    eid: str, seq: int, value: float, *, name: str | None = None, agent: str | None = None
) -> Reward:
    return Reward(episode_id=eid, value=value, step=seq, name=name, agent=agent)


def record(
    eid: str,
    reward: float | Sequence[Reward] | None,
    calls: int | Sequence[Transition] = 1,
    **episode_kwargs: Any,
) -> EpisodeRecord:
    """An episode record; ``reward`` a float gives one main outcome reward, None gives none."""
    ep = episode(eid, **episode_kwargs)
    transitions = (
        tuple(call(eid, k) for k in range(calls)) if isinstance(calls, int) else tuple(calls)
    )
    if reward is None:
        rewards: tuple[Reward, ...] = ()
    elif isinstance(reward, int | float):
        rewards = (outcome(eid, float(reward)),)
    else:
        rewards = tuple(reward)
    return EpisodeRecord(episode=ep, transitions=transitions, rewards=rewards)


def simple_group(
    outcomes: Sequence[float], calls: Sequence[int] | None = None, group: str = "g"
) -> list[EpisodeRecord]:
    """One record per outcome, ``calls[i]`` calls each (default 1), ids ``e0, e1, ...``."""
    ns = calls if calls is not None else [1] * len(outcomes)
    return [
        record(f"e{i}", r, n, group=group)
        for i, (r, n) in enumerate(zip(outcomes, ns, strict=True))
    ]
