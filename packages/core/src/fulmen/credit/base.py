"""The credit-assignment contract: which LLM calls of a group of episodes train, and how much.

**Group.** A credit assigner scores one *group* at a time: the episodes that share
``Episode.group_id`` (same task, same training step). Every record of a group must have the
same ``group_id`` and the same ``task.id``; episodes whose ``group_id`` is None are grouped by
task (key ``task:<id>``). A mixed group is a bug upstream and raises :class:`ValueError`.

**What is scored.** Inside a group, each episode's transitions are split by agent
(``Transition.agent``; None is a role of its own) into *tracks*: one agent's calls in one
episode, ordered by ``seq``. The *turn index* of a call is its 0-based position in its track.
Statistics are always computed per role: a call is only ever compared with calls of the same
agent.

**Rewards** (see :mod:`fulmen.credit.tracks`). A reward counts when its dimension has a weight
in ``reward_weights`` (default: only the main reward, ``Reward.name`` None, weight 1). The
*outcome* of a track is the weighted sum of the episode's outcome-level rewards
(``Reward.step`` None) whose ``agent`` is None or the track's agent. Step rewards
(``Reward.step`` = a transition ``seq``) belong to that transition.

**Exclusions, in this order, each with a counter and a** :class:`SkipReason`:

1. Failed episodes (status not ``succeeded`` or termination not ``completed``): excluded from
   every statistic, never scored 0 (``failed_episodes``, ``failed_episodes_<reason>``).
2. Agents not selected by ``agents``: never scored (``agent_not_selected_transitions``).
3. Tracks that no counted reward reaches (outcome-only assigners need an outcome reward):
   excluded, never scored 0. When no selected track of a succeeded episode is rewarded, the
   episode counts in ``no_reward_episodes``; otherwise the track counts in
   ``no_reward_agent_tracks``.
4. Transitions without token ids (``Transition.trainable`` False): they take part in returns,
   statistics and turn indices but never train (``untrainable_transitions``).
5. Groups without signal (all compared scores equal) when ``drop_no_signal`` is on
   (``dropped_groups_no_signal``, ``dropped_transitions_no_signal``).

Every transition of the group comes back in :attr:`GroupCredit.transitions` with either an
advantage or a :class:`SkipReason`; ``trained_transitions`` counts the former.

**Units.** Advantages of :class:`~fulmen.credit.outcome.BroadcastAssigner` and
:class:`~fulmen.credit.outcome.DiscountedAssigner` are in reward units; those of the GRPO
family are in group standard deviations (reward units with ``std_normalize = False``).

**Writing an assigner.** Subclass :class:`CreditAssigner` (a frozen, keyword-only dataclass)
and implement :meth:`CreditAssigner.compute`; the base class does validation, exclusions and
counters.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

from fulmen.credit.filters import failure_reason, select_agent
from fulmen.credit.tracks import Track, build_tracks, normalize_weights
from fulmen.protocol import Episode, EpisodeRecord, Transition

__all__ = [
    "AgentSelector",
    "CreditAssigner",
    "CreditedTransition",
    "GroupCredit",
    "PreparedGroup",
    "SkipReason",
    "StepCredit",
    "TransitionKey",
    "group_key_of",
    "role_key",
]

AgentSelector = Sequence[str] | Callable[[str | None], bool]
"""Which agents train: a list of names, or a predicate on ``Transition.agent``."""

TransitionKey = tuple[str, int]
"""``(episode_id, seq)``: identifies one transition."""


class SkipReason(StrEnum):
    """Why a transition does not train."""

    FAILED_EPISODE = "failed_episode"
    AGENT_NOT_SELECTED = "agent_not_selected"
    NO_REWARD = "no_reward"
    NO_SIGNAL = "no_signal"
    UNTRAINABLE = "untrainable"


@dataclass(frozen=True, slots=True, kw_only=True)
class CreditedTransition:
    """One transition with its credit.

    Exactly one of ``advantage`` and ``skip_reason`` is None: a transition trains iff it has an
    advantage. ``token_advantages``, when set, has one entry per response token and overrides
    the scalar for the batch builder.
    """

    transition: Transition
    """The transition credited."""
    episode: Episode
    """Its episode."""
    turn: int
    """0-based position of the call among its agent's calls in the episode."""
    advantage: float | None
    """Scalar advantage (None when the transition does not train)."""
    group_key: str
    """Key of the comparison group the advantage was computed in (verl's ``uid``)."""
    skip_reason: SkipReason | None = None
    """Why it does not train (None when it trains)."""
    token_advantages: tuple[float, ...] | None = None
    """Per-token advantages, one per response token (None: every token gets ``advantage``)."""

    def __post_init__(self) -> None:
        if (self.advantage is None) == (self.skip_reason is None):
            raise ValueError(
                "CreditedTransition: set exactly one of advantage and skip_reason "
                f"(got advantage={self.advantage!r}, skip_reason={self.skip_reason!r})"
            )
        n = len(self.transition.response_token_ids)
        if self.token_advantages is not None and len(self.token_advantages) != n:
            raise ValueError(
                f"CreditedTransition.token_advantages: expected {n} entries (one per response "
                f"token), got {len(self.token_advantages)}"
            )

    @property
    def trains(self) -> bool:
        """True when the transition reaches a batch."""
        return self.advantage is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupCredit:
    """The credit of one group: every transition of every episode, in input order."""

    group_id: str
    """The group's key (``Episode.group_id``, or ``task:<id>``)."""
    transitions: tuple[CreditedTransition, ...]
    """Every transition of the group, trained or not, in record then ``seq`` order."""
    counters: Mapping[str, int]
    """Counters of this group (see the module docstring); summed over groups by the batch."""

    @property
    def trained(self) -> tuple[CreditedTransition, ...]:
        """The transitions that train."""
        return tuple(c for c in self.transitions if c.trains)


@dataclass(frozen=True, slots=True, kw_only=True)
class StepCredit:
    """What an assigner's :meth:`CreditAssigner.compute` returns for one transition."""

    advantage: float | None
    """The advantage, or None when its comparison group has no signal and is dropped."""
    group_key: str
    """Key of the comparison group."""
    token_advantages: tuple[float, ...] | None = None
    """Optional per-token advantages (one per response token)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PreparedGroup:
    """What :meth:`CreditAssigner.compute` sees: the group's rewarded, selected tracks."""

    group_id: str
    """The group's key."""
    tracks: tuple[Track, ...]
    """One track per (usable episode, selected agent) that a counted reward reaches."""


def group_key_of(episode: Episode) -> str:
    """The group key of an episode: its ``group_id``, or ``task:<task id>`` when None."""
    return episode.group_id if episode.group_id is not None else f"task:{episode.task.id}"


def role_key(group_id: str, agent: str | None) -> str:
    """Key of one role's comparison group: ``group_id``, or ``group_id@agent`` for named agents."""
    return group_id if agent is None else f"{group_id}@{agent}"


@dataclass(frozen=True, kw_only=True)
class CreditAssigner(ABC):
    """Base of every credit assigner. Subclasses implement :meth:`compute`.

    Options shared by every assigner:

    Attributes:
        reward_weights: weight per reward dimension; the key ``"main"`` is the main reward
            (``Reward.name`` None). Dimensions without a weight are ignored
            (``rewards_unweighted``). None means ``{"main": 1.0}``.
        agents: agents that train, as names or a predicate on ``Transition.agent``; None
            trains every agent.
        drop_no_signal: drop comparison groups whose scores are all equal.
    """

    name: ClassVar[str] = ""
    """Config name of the assigner."""
    uses_step_rewards: ClassVar[bool] = False
    """False: only outcome rewards are used (step rewards counted in ``step_rewards_ignored``)
    and a track needs an outcome reward to be scored."""

    reward_weights: Mapping[str, float] | None = None
    agents: AgentSelector | None = None
    drop_no_signal: bool = False

    def __post_init__(self) -> None:
        if self.reward_weights is not None:
            object.__setattr__(self, "reward_weights", normalize_weights(self.reward_weights))
        if isinstance(self.agents, str):
            raise ValueError(
                f"agents: expected a list of agent names or a predicate, got the string "
                f"{self.agents!r} (write [{self.agents!r}])"
            )
        if self.agents is not None and not callable(self.agents):
            names = tuple(self.agents)
            bad = _non_strings(names)
            if bad:
                raise ValueError(f"agents: expected agent names (strings), got {bad[0]!r}")
            object.__setattr__(self, "agents", names)

    @abstractmethod
    def compute(self, group: PreparedGroup, counters: Counter[str]) -> Mapping[TransitionKey, StepCredit]:
        """Credit every transition of ``group.tracks`` (trainable or not).

        Args:
            group: the rewarded, selected tracks of one group.
            counters: add assigner-specific counters here (``dropped_groups_no_signal``...).

        Returns:
            A :class:`StepCredit` per ``(episode_id, seq)`` of every track transition.
        """

    def assign(self, group: Sequence[EpisodeRecord]) -> GroupCredit:
        """Credit one group of episodes (see the module docstring for the contract).

        Raises:
            ValueError: empty group, mixed ``group_id`` or task, duplicate episode ids, or a
                transition whose ``episode_id`` or ``seq`` does not fit its record.
        """
        group_id = _validate_group(group)
        weights = normalize_weights(self.reward_weights)
        counters: Counter[str] = Counter(groups=1, episodes=len(group))
        skips: dict[TransitionKey, SkipReason] = {}
        tracks: list[Track] = []
        for record in group:
            tracks.extend(self._usable_tracks(record, weights, counters, skips))
        credits = self.compute(PreparedGroup(group_id=group_id, tracks=tuple(tracks)), counters)
        return GroupCredit(
            group_id=group_id,
            transitions=tuple(_assemble(group, group_id, skips, credits, counters)),
            counters=dict(counters),
        )

    def _usable_tracks(
        self,
        record: EpisodeRecord,
        weights: Mapping[str, float],
        counters: Counter[str],
        skips: dict[TransitionKey, SkipReason],
    ) -> list[Track]:
        """The episode's selected, rewarded tracks; records why every other call is skipped."""
        ep = record.episode
        reason = failure_reason(ep)
        if reason is not None:
            counters["failed_episodes"] += 1
            counters[f"failed_episodes_{reason}"] += 1
            for t in record.transitions:
                skips[(ep.id, t.seq)] = SkipReason.FAILED_EPISODE
            return []
        selected: list[Track] = []
        for track in build_tracks(record, weights, counters, use_steps=self.uses_step_rewards):
            if select_agent(self.agents, track.agent):
                selected.append(track)
                continue
            counters["agent_not_selected_transitions"] += len(track.transitions)
            for t in track.transitions:
                skips[(ep.id, t.seq)] = SkipReason.AGENT_NOT_SELECTED
        rewarded = [tr for tr in selected if self._rewarded(tr)]
        unrewarded = [tr for tr in selected if not self._rewarded(tr)]
        if selected and not rewarded:
            counters["no_reward_episodes"] += 1
        else:
            counters["no_reward_agent_tracks"] += len(unrewarded)
        for tr in unrewarded:
            for t in tr.transitions:
                skips[(ep.id, t.seq)] = SkipReason.NO_REWARD
        return rewarded

    def _rewarded(self, track: Track) -> bool:
        return track.has_outcome or (self.uses_step_rewards and track.has_step_reward)


def _assemble(
    group: Sequence[EpisodeRecord],
    group_id: str,
    skips: Mapping[TransitionKey, SkipReason],
    credits: Mapping[TransitionKey, StepCredit],
    counters: Counter[str],
) -> list[CreditedTransition]:
    out: list[CreditedTransition] = []
    for record in group:
        ep = record.episode
        turns = _turn_indices(record.transitions)
        for t in record.transitions:
            key = (ep.id, t.seq)
            turn = turns[t.seq]
            skip = skips.get(key)
            credit = credits.get(key)
            if skip is None and credit is None:
                raise RuntimeError(f"credit assigner returned no credit for transition {key}")
            if skip is None and not t.trainable:
                counters["untrainable_transitions"] += 1
                skip = SkipReason.UNTRAINABLE
            if skip is None and credit is not None and credit.advantage is None:
                counters["dropped_transitions_no_signal"] += 1
                skip = SkipReason.NO_SIGNAL
            if skip is not None or credit is None or credit.advantage is None:
                gk = credit.group_key if credit is not None else group_id
                out.append(CreditedTransition(
                    transition=t, episode=ep, turn=turn, advantage=None, group_key=gk,
                    skip_reason=skip or SkipReason.NO_SIGNAL,
                ))
                continue
            out.append(CreditedTransition(
                transition=t, episode=ep, turn=turn, advantage=credit.advantage,
                group_key=credit.group_key, token_advantages=credit.token_advantages,
            ))
    counters["trained_transitions"] += sum(1 for c in out if c.trains)
    return out


def _turn_indices(transitions: Sequence[Transition]) -> dict[int, int]:
    """seq -> position of the call among its agent's calls, in seq order."""
    seen: Counter[str | None] = Counter()
    out: dict[int, int] = {}
    for t in sorted(transitions, key=lambda t: t.seq):
        out[t.seq] = seen[t.agent]
        seen[t.agent] += 1
    return out


def _non_strings(values: Sequence[object]) -> list[object]:
    return [v for v in values if not isinstance(v, str)]


def _validate_group(group: Sequence[EpisodeRecord]) -> str:
    if not group:
        raise ValueError("credit assignment: empty group (pass at least one EpisodeRecord)")
    first = group[0].episode
    key = group_key_of(first)
    seen: set[str] = set()
    for record in group:
        ep = record.episode
        if ep.group_id != first.group_id:
            raise ValueError(
                f"credit assignment: episode {ep.id!r} has group_id {ep.group_id!r} but the group "
                f"is {first.group_id!r}; pass the episodes of one group_id per group"
            )
        if ep.task.id != first.task.id:
            raise ValueError(
                f"credit assignment: episode {ep.id!r} is for task {ep.task.id!r} but group "
                f"{key!r} is for task {first.task.id!r}; a group holds one task"
            )
        if ep.id in seen:
            raise ValueError(f"credit assignment: episode {ep.id!r} appears twice in group {key!r}")
        seen.add(ep.id)
        seqs: set[int] = set()
        for t in record.transitions:
            if t.episode_id != ep.id:
                raise ValueError(
                    f"credit assignment: transition seq {t.seq} has episode_id {t.episode_id!r} "
                    f"but sits in the record of episode {ep.id!r}"
                )
            if t.seq in seqs:
                raise ValueError(f"credit assignment: episode {ep.id!r} has two transitions with seq {t.seq}")
            seqs.add(t.seq)
    return key

