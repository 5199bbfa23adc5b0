"""Assigners without a baseline: terminal broadcast and discounted returns (reward units).

Both compare nothing, so ``drop_no_signal`` is off by default; when turned on, a role whose
advantages are all equal across the group is dropped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from fulmen.credit._checks import check_unit
from fulmen.credit.base import CreditAssigner, PreparedGroup, StepCredit, TransitionKey, role_key
from fulmen.credit.filters import has_signal
from fulmen.credit.tracks import Track

__all__ = ["BroadcastAssigner", "DiscountedAssigner"]

_Values = Callable[[Track], list[float]]


@dataclass(frozen=True, kw_only=True)
class BroadcastAssigner(CreditAssigner):
    """Every call gets its episode's outcome: ``A(call) = R_outcome(episode, agent)``.

    ``R_outcome`` is the weighted sum of the outcome-level rewards routed to the call's agent;
    step rewards are ignored (counted in ``step_rewards_ignored``). This is the anchor
    framework's default, kept as a baseline. Example: an episode of 3 calls with outcome 0.5
    gives advantages ``(0.5, 0.5, 0.5)``.
    """

    name = "broadcast"
    uses_step_rewards = False

    def compute(self, group: PreparedGroup, counters: Counter[str]) -> Mapping[TransitionKey, StepCredit]:
        """See :meth:`CreditAssigner.compute`."""
        return _per_role(group, counters, self.drop_no_signal, lambda tr: [tr.outcome] * len(tr.transitions))


@dataclass(frozen=True, kw_only=True)
class DiscountedAssigner(CreditAssigner):
    """Discounted return over the agent's own calls, using per-step rewards.

    For an agent's calls ``0..T-1`` with step rewards ``r_k`` (rewards attached to the call's
    ``seq``) and outcome ``R`` received at the last call::

        G_k = r_k + gamma * G_{k+1},   G_T = 0,   r_{T-1} includes R
        A(call k) = G_k

    Discounting counts the agent's own calls, not wall-clock time or tokens. With
    ``gamma = 1`` and only an outcome reward every call gets ``R`` (= broadcast). Example:
    step rewards ``(0, 1, 0)``, outcome 2, ``gamma = 0.5`` gives ``G = (1.0, 2.0, 2.0)``.

    Attributes:
        gamma: discount factor in [0, 1].
    """

    name = "discounted"
    uses_step_rewards = True
    gamma: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_unit("gamma", self.gamma)

    def compute(self, group: PreparedGroup, counters: Counter[str]) -> Mapping[TransitionKey, StepCredit]:
        """See :meth:`CreditAssigner.compute`."""
        return _per_role(group, counters, self.drop_no_signal, lambda tr: list(tr.returns(self.gamma)))


def _per_role(
    group: PreparedGroup,
    counters: Counter[str],
    drop_no_signal: bool,
    values: _Values,
) -> dict[TransitionKey, StepCredit]:
    per_role: dict[str | None, list[tuple[TransitionKey, float]]] = {}
    for tr in group.tracks:
        items = per_role.setdefault(tr.agent, [])
        items.extend(((tr.episode.id, t.seq), v) for t, v in zip(tr.transitions, values(tr), strict=True))
    out: dict[TransitionKey, StepCredit] = {}
    for agent, items in per_role.items():
        key = role_key(group.group_id, agent)
        keep = not drop_no_signal or has_signal([v for _, v in items])
        if not keep:
            counters["dropped_groups_no_signal"] += 1
        for tkey, v in items:
            out[tkey] = StepCredit(advantage=v if keep else None, group_key=key)
    return out
