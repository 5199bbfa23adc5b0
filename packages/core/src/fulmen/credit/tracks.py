"""Tracks: one agent's calls in one episode, with the rewards that reach them.

Reward routing rules (every skipped reward is counted, never silently dropped):

* A reward counts when its dimension has a weight; the dimension of ``Reward.name`` None is
  ``"main"`` (a reward literally named ``"main"`` is the same dimension). Its contribution is
  ``weight * value``; unweighted dimensions count in ``rewards_unweighted``.
* Outcome rewards (``step`` None) reach every track when ``agent`` is None, else only the track
  of that agent (``rewards_unrouted`` when the episode has no call of that agent).
* Step rewards (``step`` = a ``seq``) belong to that transition, hence to its agent's track
  (``step_rewards_unknown_step`` when no transition has that seq, ``step_rewards_agent_mismatch``
  when ``Reward.agent`` names another agent than the transition's). Assigners that use only
  outcomes count them in ``step_rewards_ignored``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

from fulmen.credit._checks import is_number
from fulmen.protocol import Episode, EpisodeRecord, Reward, Transition

__all__ = ["MAIN", "Track", "build_tracks", "by_role", "discounted_returns", "normalize_weights"]

MAIN = "main"
"""Dimension name of the main reward (``Reward.name`` None) in ``reward_weights``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Track:
    """One agent's calls in one usable episode and the rewards routed to them."""

    episode: Episode
    """The episode."""
    agent: str | None
    """The agent (``Transition.agent``)."""
    transitions: tuple[Transition, ...]
    """The agent's calls in ``seq`` order; index = turn index. Untrainable calls included."""
    step_rewards: tuple[float, ...]
    """Weighted step reward of each call (0.0 where none)."""
    outcome: float
    """Weighted sum of the outcome rewards routed to this agent (0.0 when none)."""
    has_outcome: bool
    """True when at least one counted outcome reward reaches the track."""
    has_step_reward: bool
    """True when at least one counted step reward belongs to one of its calls."""

    @property
    def total(self) -> float:
        """Undiscounted sum of every counted reward of the track."""
        return self.outcome + math.fsum(self.step_rewards)

    def returns(self, gamma: float) -> tuple[float, ...]:
        """Discounted return of each call; the outcome is received at the last call."""
        rewards = list(self.step_rewards)
        rewards[-1] += self.outcome
        return discounted_returns(rewards, gamma)


def discounted_returns(rewards: list[float] | tuple[float, ...], gamma: float) -> tuple[float, ...]:
    """``G_k = r_k + gamma * G_{k+1}`` with ``G`` past the end equal to 0."""
    out = [0.0] * len(rewards)
    acc = 0.0
    for k in range(len(rewards) - 1, -1, -1):
        acc = rewards[k] + gamma * acc
        out[k] = acc
    return tuple(out)


def normalize_weights(weights: object) -> dict[str, float]:
    """Validate ``reward_weights`` and return it as a dict (None gives ``{"main": 1.0}``).

    Raises:
        ValueError: not a mapping, empty, a non-string key, or a non-finite / non-number weight.
    """
    if weights is None:
        return {MAIN: 1.0}
    raw = weights
    if not isinstance(raw, Mapping):
        raise ValueError(
            f"reward_weights: expected a table of dimension = weight, got {type(raw).__name__}"
        )
    if not raw:
        raise ValueError('reward_weights: empty; give at least one weight, e.g. {"main": 1.0}')
    out: dict[str, float] = {}
    for key, value in cast("Mapping[object, object]", raw).items():
        if not isinstance(key, str):
            raise ValueError(f"reward_weights: keys are dimension names (strings), got {key!r}")
        if not is_number(value):
            raise ValueError(f"reward_weights.{key}: expected a finite number, got {value!r}")
        out[key] = float(cast(float, value))
    return out


def build_tracks(
    record: EpisodeRecord,
    weights: Mapping[str, float],
    counters: Counter[str],
    *,
    use_steps: bool,
) -> list[Track]:
    """Split a usable episode into tracks, one per agent, in order of first call.

    Args:
        record: a succeeded episode.
        weights: validated ``reward_weights``.
        counters: routing counters are added here (see the module docstring).
        use_steps: False ignores step rewards (counted in ``step_rewards_ignored``).
    """
    transitions = sorted(record.transitions, key=lambda t: t.seq)
    if not transitions:
        counters["episodes_without_calls"] += 1
        return []
    by_agent: dict[str | None, list[Transition]] = {}
    for t in transitions:
        by_agent.setdefault(t.agent, []).append(t)
    by_seq = {t.seq: t for t in transitions}
    outcome: dict[str | None, float] = dict.fromkeys(by_agent, 0.0)
    has_outcome: set[str | None] = set()
    steps: dict[int, float] = {}
    for r in record.rewards:
        w = _weight(r, weights)
        if w is None:
            counters["rewards_unweighted"] += 1
        elif r.step is None:
            targets = list(by_agent) if r.agent is None else [r.agent]
            if r.agent is not None and r.agent not in by_agent:
                counters["rewards_unrouted"] += 1
                continue
            for agent in targets:
                outcome[agent] += w * r.value
                has_outcome.add(agent)
        elif not use_steps:
            counters["step_rewards_ignored"] += 1
        elif r.step not in by_seq:
            counters["step_rewards_unknown_step"] += 1
        elif r.agent is not None and r.agent != by_seq[r.step].agent:
            counters["step_rewards_agent_mismatch"] += 1
        else:
            steps[r.step] = steps.get(r.step, 0.0) + w * r.value
    return [
        Track(
            episode=record.episode,
            agent=agent,
            transitions=tuple(calls),
            step_rewards=tuple(steps.get(t.seq, 0.0) for t in calls),
            outcome=outcome[agent],
            has_outcome=agent in has_outcome,
            has_step_reward=any(t.seq in steps for t in calls),
        )
        for agent, calls in by_agent.items()
    ]


def _weight(reward: Reward, weights: Mapping[str, float]) -> float | None:
    dim = MAIN if reward.name is None else reward.name
    return weights.get(dim)


def by_role(tracks: Sequence[Track]) -> dict[str | None, list[Track]]:
    """Tracks grouped by agent, in order of first appearance."""
    out: dict[str | None, list[Track]] = {}
    for tr in tracks:
        out.setdefault(tr.agent, []).append(tr)
    return out
