"""Credit assignment: which LLM calls of a group of episodes train, and with what advantage.

Pick an assigner by name with :func:`assigner_from_config` (what ``fulmen train`` does with its
``[credit]`` table) or build one directly::

    from fulmen.credit import TurnGRPOAssigner
    assigner = TurnGRPOAssigner(gamma=1.0, agents=["solver"])
    credit = assigner.assign(records_of_one_group)

The contract (groups, failed and unrewarded episodes, units, counters) is in
:mod:`fulmen.credit.base`; each assigner's math is in its docstring. Imports numpy.
"""

from __future__ import annotations

from fulmen.credit.base import (
    AgentSelector,
    CreditAssigner,
    CreditedTransition,
    GroupCredit,
    PreparedGroup,
    SkipReason,
    StepCredit,
    TransitionKey,
    group_key_of,
    role_key,
)
from fulmen.credit.config import ASSIGNERS, ConfigError, allowed_options, assigner_from_config
from fulmen.credit.filters import NO_SIGNAL_TOLERANCE, failure_reason, has_signal, select_agent
from fulmen.credit.gigpo import STATE_KEYS, GiGPOAssigner, StateKeyFn, resolve_state_key
from fulmen.credit.grpo import GRPOAssigner, TurnGRPOAssigner, group_advantages
from fulmen.credit.outcome import BroadcastAssigner, DiscountedAssigner
from fulmen.credit.tracks import MAIN, Track, build_tracks, discounted_returns

__all__ = [
    "ASSIGNERS",
    "MAIN",
    "NO_SIGNAL_TOLERANCE",
    "STATE_KEYS",
    "AgentSelector",
    "BroadcastAssigner",
    "ConfigError",
    "CreditAssigner",
    "CreditedTransition",
    "DiscountedAssigner",
    "GRPOAssigner",
    "GiGPOAssigner",
    "GroupCredit",
    "PreparedGroup",
    "SkipReason",
    "StateKeyFn",
    "StepCredit",
    "Track",
    "TransitionKey",
    "TurnGRPOAssigner",
    "allowed_options",
    "assigner_from_config",
    "build_tracks",
    "discounted_returns",
    "failure_reason",
    "group_advantages",
    "group_key_of",
    "has_signal",
    "resolve_state_key",
    "role_key",
    "select_agent",
]
