"""Plain outcome GRPO equals verl 0.9.1's ``compute_grpo_outcome_advantage`` on the same data.

verl is a dev/test dependency only; this is the one test module that imports it (slow import).
verl sees one row per episode (its agent loop puts a whole trajectory in one row, the score on
the last response token); fulmen gives every call of the episode that advantage.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from credit_factories import call, record
from fulmen.batch import build_batch
from fulmen.credit import GRPOAssigner
from fulmen.protocol import EpisodeRecord

pytestmark = pytest.mark.slow  # importing verl takes 20-40 s; the tests themselves take ~1 s


@pytest.fixture(scope="module")
def verl_grpo() -> Any:
    """verl's ``compute_grpo_outcome_advantage``, imported only when a test here runs."""
    return pytest.importorskip("verl.trainer.ppo.core_algos").compute_grpo_outcome_advantage


def random_groups(seed: int) -> tuple[list[list[EpisodeRecord]], list[int]]:
    """Groups of 2-8 episodes with 1-4 calls each; rewards binary or continuous (ties included).

    Returns the groups and each episode's total response length (verl's row length).
    """
    rng = np.random.default_rng(seed)
    groups: list[list[EpisodeRecord]] = []
    lengths: list[int] = []
    for g in range(int(rng.integers(1, 6))):
        size = int(rng.integers(2, 9))
        binary = bool(rng.integers(0, 2))
        group: list[EpisodeRecord] = []
        for i in range(size):
            eid = f"g{g}e{i}"
            reward = float(rng.integers(0, 2)) if binary else float(np.round(rng.normal(), 3))
            calls = [
                call(
                    eid,
                    k,
                    response=tuple(
                        int(x) for x in rng.integers(5, 100, size=int(rng.integers(1, 6)))
                    ),
                )
                for k in range(int(rng.integers(1, 5)))
            ]
            group.append(record(eid, reward, calls, group=f"uid{g}"))
            lengths.append(sum(len(c.response_token_ids) for c in calls))
        groups.append(group)
    return groups, lengths


def verl_advantages(
    verl_grpo: Any, groups: list[list[EpisodeRecord]], lengths: list[int], *, std: bool, dtype: str
) -> dict[str, float]:
    """Episode id -> verl's advantage, from one padded row per episode (``dtype``: torch name)."""
    import torch

    dt = getattr(torch, dtype)
    records = [r for group in groups for r in group]
    width = max(lengths)
    rewards = torch.zeros(len(records), width, dtype=dt)
    mask = torch.zeros(len(records), width, dtype=dt)
    for i, (r, n) in enumerate(zip(records, lengths, strict=True)):
        mask[i, :n] = 1
        rewards[i, n - 1] = r.rewards[0].value
    index = np.array([r.episode.group_id for r in records], dtype=object)
    adv, returns = verl_grpo(
        token_level_rewards=rewards,
        response_mask=mask,
        index=index,
        epsilon=1e-6,
        norm_adv_by_std_in_grpo=std,
    )
    assert torch.equal(adv, returns)
    for i, n in enumerate(lengths):
        assert torch.all(adv[i, n:] == 0)
        assert torch.allclose(adv[i, :n], adv[i, 0].expand(n))
    return {r.episode.id: float(adv[i, 0]) for i, r in enumerate(records)}


@pytest.mark.parametrize("std", [True, False])
@pytest.mark.parametrize("seed", range(12))
def test_grpo_matches_verl(verl_grpo: Any, seed: int, std: bool) -> None:
    groups, lengths = random_groups(seed)
    ours = build_batch(groups, GRPOAssigner(std_normalize=std, epsilon=1e-6, drop_no_signal=False))
    expected64 = verl_advantages(verl_grpo, groups, lengths, std=std, dtype="float64")
    expected32 = verl_advantages(verl_grpo, groups, lengths, std=std, dtype="float32")
    assert len(ours.rows) == sum(len(r.transitions) for g in groups for r in g)
    for row in ours.rows:
        assert row.group_id == next(
            r.episode.group_id for g in groups for r in g if r.episode.id == row.episode_id
        )
        for a in row.advantages:
            assert a == pytest.approx(expected64[row.episode_id], rel=1e-12, abs=1e-12)
            assert a == pytest.approx(expected32[row.episode_id], rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_dropping_no_signal_groups_only_removes_verl_zero_rows(verl_grpo: Any, seed: int) -> None:
    groups, lengths = random_groups(seed + 100)
    expected = verl_advantages(verl_grpo, groups, lengths, std=True, dtype="float64")
    batch = build_batch(groups, GRPOAssigner())
    kept = {row.episode_id for row in batch.rows}
    for row in batch.rows:
        assert row.advantages[0] == pytest.approx(expected[row.episode_id], rel=1e-12, abs=1e-12)
    dropped = {r.episode.id for g in groups for r in g} - kept
    assert all(expected[e] == 0.0 for e in dropped)
    assert batch.stats["dropped_groups_no_signal"] == sum(
        1 for g in groups if len({r.rewards[0].value for r in g}) == 1
    )


def test_singleton_groups_differ_from_verl_by_design(verl_grpo: Any) -> None:
    """verl scores a lone episode s / (1 + eps); fulmen treats it as a group without signal."""
    groups = [[record("solo", 0.75, 1, group="alone")]]
    expected = verl_advantages(verl_grpo, groups, [2], std=True, dtype="float64")
    assert expected["solo"] == pytest.approx(0.75 / (1 + 1e-6))
    assert build_batch(groups, GRPOAssigner()).rows == ()
    assert build_batch(groups, GRPOAssigner(drop_no_signal=False)).rows[0].advantages == (0.0, 0.0)
