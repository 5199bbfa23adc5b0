"""The CreditAssigner contract: grouping, exclusions, reward routing, counters, validation."""

from __future__ import annotations

import subprocess
import sys

import pytest
from credit_factories import call, outcome, record, simple_group, step
from fulmen.credit import (
    BroadcastAssigner,
    CreditedTransition,
    DiscountedAssigner,
    GiGPOAssigner,
    GRPOAssigner,
    SkipReason,
    TurnGRPOAssigner,
)
from fulmen.protocol import EpisodeStatus, TerminationReason

ALL = [
    BroadcastAssigner(),
    DiscountedAssigner(gamma=0.9),
    GRPOAssigner(),
    TurnGRPOAssigner(),
    GiGPOAssigner(),
]


def advantages(
    credit_transitions: tuple[CreditedTransition, ...],
) -> dict[tuple[str, int], float | None]:
    return {(c.episode.id, c.transition.seq): c.advantage for c in credit_transitions}


@pytest.mark.parametrize("assigner", ALL, ids=lambda a: a.name)
def test_failed_episodes_are_excluded_not_scored_zero(assigner: GRPOAssigner) -> None:
    base = simple_group([1.0, 0.0, 1.0], calls=[2, 1, 3])
    failed = [
        record(
            "f1", 0.0, 2, status=EpisodeStatus.FAILED, termination=TerminationReason.AGENT_ERROR
        ),
        record("f2", 0.0, 1, status=EpisodeStatus.TIMED_OUT, termination=TerminationReason.TIMEOUT),
        record(
            "f3", None, 1, status=EpisodeStatus.FAILED, termination=TerminationReason.UPSTREAM_ERROR
        ),
        record("f4", 1.0, 1, status=EpisodeStatus.SUCCEEDED, termination=None),
    ]
    clean = assigner.assign(base)
    mixed = assigner.assign([failed[0], *base[:2], failed[1], failed[2], base[2], failed[3]])
    got = advantages(mixed.transitions)
    assert {k: v for k, v in got.items() if not k[0].startswith("f")} == advantages(
        clean.transitions
    )
    assert all(
        c.skip_reason is SkipReason.FAILED_EPISODE
        for c in mixed.transitions
        if c.episode.id.startswith("f")
    )
    assert mixed.counters["failed_episodes"] == 4
    for reason in ("agent_error", "timeout", "upstream_error", "no_termination"):
        assert mixed.counters[f"failed_episodes_{reason}"] == 1


def test_succeeded_episode_without_reward_is_excluded_and_counted() -> None:
    group = [*simple_group([1.0, 0.0]), record("e2", None, 2)]
    credit = GRPOAssigner().assign(group)
    assert advantages(credit.transitions) == advantages(
        GRPOAssigner().assign(group[:2]).transitions
    ) | {
        ("e2", 0): None,
        ("e2", 1): None,
    }
    assert {c.skip_reason for c in credit.transitions if c.episode.id == "e2"} == {
        SkipReason.NO_REWARD
    }
    assert credit.counters["no_reward_episodes"] == 1


def test_outcome_assigners_need_an_outcome_reward() -> None:
    group = [*simple_group([1.0, 0.0]), record("e2", [step("e2", 0, 1.0)])]
    grpo = GRPOAssigner().assign(group)
    assert grpo.counters["no_reward_episodes"] == 1
    assert grpo.counters["step_rewards_ignored"] == 1
    turn = TurnGRPOAssigner().assign(group)
    assert turn.counters.get("no_reward_episodes", 0) == 0
    assert advantages(turn.transitions)[("e2", 0)] is not None


def test_only_unweighted_rewards_means_no_reward() -> None:
    credit = BroadcastAssigner().assign([record("e0", [outcome("e0", 1.0, name="style")])])
    assert credit.transitions[0].skip_reason is SkipReason.NO_REWARD
    assert credit.counters["rewards_unweighted"] == 1
    assert credit.counters["no_reward_episodes"] == 1


def test_agent_without_routed_reward_is_excluded_per_track() -> None:
    calls = [call("e0", 0, agent="a"), call("e0", 1, agent="b")]
    credit = BroadcastAssigner().assign([record("e0", [outcome("e0", 2.0, agent="a")], calls)])
    assert advantages(credit.transitions) == {("e0", 0): 2.0, ("e0", 1): None}
    assert credit.counters["no_reward_agent_tracks"] == 1
    assert credit.counters.get("no_reward_episodes", 0) == 0


def test_reward_routing_counters() -> None:
    calls = [call("e0", 0, agent="a"), call("e0", 1, agent="b")]
    rewards = [
        outcome("e0", 1.0),
        outcome("e0", 5.0, agent="ghost"),  # no call of that agent
        step("e0", 7, 5.0),  # no such seq
        step("e0", 1, 5.0, agent="a"),  # seq 1 is agent b's
        step("e0", 0, 0.5, agent="a"),
    ]
    credit = DiscountedAssigner().assign([record("e0", rewards, calls)])
    assert advantages(credit.transitions) == {("e0", 0): 1.5, ("e0", 1): 1.0}
    assert credit.counters["rewards_unrouted"] == 1
    assert credit.counters["step_rewards_unknown_step"] == 1
    assert credit.counters["step_rewards_agent_mismatch"] == 1


def test_untrainable_calls_count_in_statistics_but_never_train() -> None:
    calls = [call("e1", 0), call("e1", 1, flags=("no_token_ids",)), call("e1", 2, response=())]
    group = [record("e0", 1.0, 1), record("e1", 0.0, calls)]
    credit = TurnGRPOAssigner(drop_no_signal=False).assign(group)
    skips = {c.transition.seq: c.skip_reason for c in credit.transitions if c.episode.id == "e1"}
    assert skips == {0: None, 1: SkipReason.UNTRAINABLE, 2: SkipReason.UNTRAINABLE}
    assert credit.counters["untrainable_transitions"] == 2
    assert [c.turn for c in credit.transitions if c.episode.id == "e1"] == [0, 1, 2]


def test_counts_trained_transitions() -> None:
    credit = GRPOAssigner().assign(simple_group([1.0, 0.0], calls=[2, 3]))
    assert credit.counters["trained_transitions"] == 5 == len(credit.trained)
    assert credit.counters["groups"] == 1 and credit.counters["episodes"] == 2


def test_group_without_group_id_is_keyed_by_task() -> None:
    group = [record("e0", 1.0, group=None), record("e1", 0.0, group=None)]
    assert {c.group_key for c in GRPOAssigner().assign(group).transitions} == {"task:t"}


@pytest.mark.parametrize(
    ("group", "message"),
    [
        ([], "empty group"),
        (
            [record("e0", 1.0), record("e1", 1.0, group="other")],
            "group_id 'other' but the group is 'g'",
        ),
        (
            [record("e0", 1.0), record("e1", 1.0, task="u")],
            "task 'u' but group 'g' is for task 't'",
        ),
        ([record("e0", 1.0), record("e0", 1.0)], "'e0' appears twice"),
        ([record("e0", 1.0, [call("zz", 0)])], "episode_id 'zz'"),
        ([record("e0", 1.0, [call("e0", 0), call("e0", 0)])], "two transitions with seq 0"),
    ],
)
def test_invalid_groups_raise_clear_errors(group: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GRPOAssigner().assign(group)


def test_option_validation_names_the_option() -> None:
    with pytest.raises(ValueError, match=r"agents: .*got the string 'coder' \(write \['coder'\]\)"):
        GRPOAssigner(agents="coder")
    with pytest.raises(ValueError, match=r"agents: expected agent names"):
        GRPOAssigner(agents=["a", 3])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"reward_weights.fmt: expected a finite number"):
        GRPOAssigner(reward_weights={"fmt": float("nan")})
    with pytest.raises(ValueError, match=r"reward_weights: empty"):
        GRPOAssigner(reward_weights={})
    with pytest.raises(ValueError, match=r"gamma: expected a number in \[0, 1\]"):
        DiscountedAssigner(gamma=1.5)
    with pytest.raises(ValueError, match=r"epsilon: expected a finite number > 0"):
        GRPOAssigner(epsilon=0.0)
    with pytest.raises(ValueError, match=r"step_weight: expected a number >= 0"):
        GiGPOAssigner(step_weight=-1.0)


def test_credited_transition_invariants() -> None:
    t = call("e0", 0, response=(1, 2))
    ep = record("e0", 1.0).episode
    with pytest.raises(ValueError, match="exactly one of advantage and skip_reason"):
        CreditedTransition(transition=t, episode=ep, turn=0, advantage=None, group_key="g")
    with pytest.raises(ValueError, match="exactly one of advantage and skip_reason"):
        CreditedTransition(
            transition=t,
            episode=ep,
            turn=0,
            advantage=1.0,
            group_key="g",
            skip_reason=SkipReason.NO_SIGNAL,
        )
    with pytest.raises(ValueError, match="token_advantages: expected 2 entries"):
        CreditedTransition(
            transition=t, episode=ep, turn=0, advantage=1.0, group_key="g", token_advantages=(1.0,)
        )


def test_import_fulmen_stays_light() -> None:
    code = "import sys, fulmen, fulmen.protocol, fulmen.rows; print('numpy' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "False"
