"""What a watcher shows about episodes: one summary per episode, statistics per agent.

Pure functions over :class:`~fulmen.protocol.EpisodeRecord` (adapter annotations already
merged: ``agent``, ``metadata["tool_results"]``), shared by ``fulmen watch`` and dashboards.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fulmen.protocol import EpisodeRecord, Reward, Transition

__all__ = [
    "BASE_POLICY",
    "UNNAMED_AGENT",
    "AgentStats",
    "EpisodeSummary",
    "agent_stats",
    "call_policy",
    "outcome_for",
    "reward_label",
    "summarize",
    "tool_names",
]

UNNAMED_AGENT = "(unnamed)"
"""Agent name used for calls no adapter or request named."""

BASE_POLICY = "(base)"
"""Policy name shown for a routed call the frozen base served (``[[policy]]`` runs: its agent is
covered by no policy)."""


def call_policy(transition: Transition) -> str | None:
    """The policy that served a call: its name, :data:`BASE_POLICY` for the frozen base, None
    for a call the gateway did not route (a run without ``[[policy]]``)."""
    if "policy" not in transition.metadata:
        return None
    name = transition.metadata["policy"]
    return str(name) if name is not None else BASE_POLICY


def tool_names(transition: Transition) -> list[str]:
    """Names of the tools the call asked for, in order (``?`` when a call has no name)."""
    names: list[str] = []
    for call in transition.tool_calls:
        function: Any = call.get("function")
        name = function.get("name") if isinstance(function, Mapping) else None
        names.append(str(name) if name else "?")
    return names


def reward_label(reward: Reward) -> str:
    """Where a reward comes from: ``outcome``, its dimension, ``step N``, ``@agent``."""
    parts = [reward.name or ("outcome" if reward.step is None else "")]
    if reward.step is not None:
        parts.append(f"step {reward.step}")
    if reward.agent is not None:
        parts.append(f"@{reward.agent}")
    return " ".join(p for p in parts if p)


def outcome_for(rewards: Iterable[Reward], agent: str | None = None) -> float | None:
    """The outcome reward (unnamed, episode-level) for ``agent`` (None: the shared ones).

    Rewards for every agent (``agent=None``) count for each agent; None when there is none.
    """
    values = [
        r.value
        for r in rewards
        if r.name is None and r.step is None and (r.agent is None or r.agent == agent)
    ]
    return sum(values) if values else None


@dataclass(frozen=True, slots=True, kw_only=True)
class EpisodeSummary:
    """One finished episode as a watcher shows it."""

    episode_id: str
    task_id: str
    status: str
    """``succeeded``, ``failed``, ``timed_out``, ``cancelled``."""
    termination: str | None
    """``completed``, ``agent_error``, ``upstream_error``..."""
    error: str | None
    group_id: str | None
    finished_at: float | None
    split: str = "train"
    """The task's dataset split (``train``, ``eval``...)."""
    policy_version: int | None = None
    """Policy version the episode ran under: the episode's, else its first call's (None when
    neither is known)."""
    agents: tuple[str, ...]
    """Agents that made calls, in order of their first call."""
    llm_calls: int
    tool_calls: tuple[str, ...]
    """Tool names called, in call order."""
    tool_errors: int
    """Tool results that carry an ``error``."""
    prompt_tokens: int
    response_tokens: int
    outcome: float | None
    """Sum of the shared outcome rewards (None: not rewarded)."""
    reward_parts: tuple[tuple[str, float], ...]
    """Every reward as ``(label, value)`` (:func:`reward_label`), in recording order."""
    calls_by_agent: Mapping[str, int]
    tools_by_agent: Mapping[str, int]
    outcome_by_agent: Mapping[str, float | None]
    """Outcome per agent (:func:`outcome_for`)."""
    policy_of_agent: Mapping[str, str] = field(default_factory=dict[str, str])
    """Routed calls only (``[[policy]]``): each agent's policy (:func:`call_policy`, its last call's)."""
    calls_by_policy: Mapping[str, int] = field(default_factory=dict[str, int])
    """Routed calls per policy."""
    policy_versions: Mapping[str, int] = field(default_factory=dict[str, int])
    """Routed calls: the highest adapter version per policy."""


def summarize(record: EpisodeRecord) -> EpisodeSummary:
    """The :class:`EpisodeSummary` of ``record``."""
    e = record.episode
    agents: dict[str, None] = {}
    calls: dict[str, int] = {}
    tools: dict[str, int] = {}
    names: list[str] = []
    errors = 0
    policy_of_agent: dict[str, str] = {}
    calls_by_policy: dict[str, int] = {}
    versions: dict[str, int] = {}
    for t in record.transitions:
        agent = t.agent or UNNAMED_AGENT
        policy = call_policy(t)
        if policy is not None:
            policy_of_agent[agent] = policy
            calls_by_policy[policy] = calls_by_policy.get(policy, 0) + 1
            if t.policy_version is not None:
                versions[policy] = max(t.policy_version, versions.get(policy, t.policy_version))
        agents.setdefault(agent)
        calls[agent] = calls.get(agent, 0) + 1
        called = tool_names(t)
        names.extend(called)
        tools[agent] = tools.get(agent, 0) + len(called)
        results: Any = t.metadata.get("tool_results", ())
        if isinstance(results, list | tuple):
            errors += sum(1 for r in results if isinstance(r, Mapping) and r.get("error"))
    return EpisodeSummary(
        episode_id=e.id,
        task_id=e.task.id,
        status=e.status.value,
        termination=e.termination.value if e.termination else None,
        error=e.error,
        group_id=e.group_id,
        finished_at=e.finished_at,
        split=e.task.split,
        policy_version=e.policy_version
        if e.policy_version is not None
        else next(
            (t.policy_version for t in record.transitions if t.policy_version is not None), None
        ),
        agents=tuple(agents),
        llm_calls=len(record.transitions),
        tool_calls=tuple(names),
        tool_errors=errors,
        prompt_tokens=sum(len(t.prompt_token_ids) for t in record.transitions),
        response_tokens=sum(len(t.response_token_ids) for t in record.transitions),
        outcome=outcome_for(record.rewards),
        reward_parts=tuple((reward_label(r), r.value) for r in record.rewards),
        calls_by_agent=calls,
        tools_by_agent=tools,
        outcome_by_agent={
            a: outcome_for(record.rewards, None if a == UNNAMED_AGENT else a) for a in agents
        },
        policy_of_agent=policy_of_agent,
        calls_by_policy=calls_by_policy,
        policy_versions=versions,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentStats:
    """One agent over a window of finished episodes."""

    agent: str
    episodes: int
    """Episodes in which it made at least one call."""
    llm_calls: int
    tool_calls: int
    rewarded: int
    """Episodes with an outcome reward for it."""
    reward_mean: float | None
    """Mean outcome reward over :attr:`rewarded` episodes (None when none)."""
    success_rate: float
    """Episodes whose outcome for it is positive, over :attr:`episodes` (failures are misses)."""

    @property
    def tool_call_rate(self) -> float:
        """Tool calls per LLM call."""
        return self.tool_calls / self.llm_calls if self.llm_calls else 0.0


@dataclass(slots=True)
class _Tally:
    episodes: int = 0
    calls: int = 0
    tools: int = 0
    rewarded: int = 0
    total: float = 0.0
    wins: int = 0


def agent_stats(summaries: Iterable[EpisodeSummary]) -> list[AgentStats]:
    """Per-agent statistics over ``summaries``, agents in order of first appearance.

    The reward mean counts succeeded episodes with an outcome for the agent; the success rate
    counts every episode the agent took part in (a failed episode is a miss).
    """
    tallies: dict[str, _Tally] = {}
    for s in summaries:
        for agent in s.agents:
            t = tallies.setdefault(agent, _Tally())
            t.episodes += 1
            t.calls += s.calls_by_agent.get(agent, 0)
            t.tools += s.tools_by_agent.get(agent, 0)
            outcome = s.outcome_by_agent.get(agent)
            if outcome is not None and s.status == "succeeded":
                t.rewarded += 1
                t.total += outcome
                t.wins += outcome > 0
    return [
        AgentStats(
            agent=agent,
            episodes=t.episodes,
            llm_calls=t.calls,
            tool_calls=t.tools,
            rewarded=t.rewarded,
            reward_mean=t.total / t.rewarded if t.rewarded else None,
            success_rate=t.wins / t.episodes if t.episodes else 0.0,
        )
        for agent, t in tallies.items()
    ]
