"""Comparing two checkpoints on the same held-out task: which evaluations exist, and the pair.

The training loop evaluates the held-out split after the base model (policy version 0) and
every ``[train] eval_every`` steps, with the weights of that step (policy version = step).
Each evaluation episode is a finished episode of split ``eval``; its policy version is the one
its calls were generated with.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fulmen.observe.summary import EpisodeSummary

__all__ = ["EVAL_SPLIT", "compare_options", "pick_episode"]

EVAL_SPLIT = "eval"
"""The split the loop evaluates."""


def compare_options(summaries: Sequence[EpisodeSummary]) -> dict[str, Any]:
    """What can be compared: ``{"versions", "success", "tasks": [{"task_id", "versions"}]}``.

    Only held-out episodes with a known policy version count; tasks and versions are sorted.
    ``success`` maps each version (as a string) to its held-out success rate: the share of its
    evaluated tasks whose last episode has a positive outcome (a failed episode is a miss, as
    in the training loop's evaluation).
    """
    tasks: dict[str, set[int]] = {}
    last: dict[tuple[int, str], EpisodeSummary] = {}
    for s in summaries:
        if s.split == EVAL_SPLIT and s.policy_version is not None:
            tasks.setdefault(s.task_id, set()).add(s.policy_version)
            last[(s.policy_version, s.task_id)] = s
    versions = sorted({v for vs in tasks.values() for v in vs})
    success: dict[str, float] = {}
    for v in versions:
        runs = [s for (version, _), s in last.items() if version == v]
        wins = sum(1 for s in runs if s.status == "succeeded" and (s.outcome or 0.0) > 0)
        success[str(v)] = wins / len(runs)
    return {
        "versions": versions,
        "success": success,
        "tasks": [{"task_id": t, "versions": sorted(vs)} for t, vs in sorted(tasks.items())],
    }


def pick_episode(
    summaries: Sequence[EpisodeSummary], task_id: str, version: int
) -> EpisodeSummary | None:
    """The last finished held-out episode of ``task_id`` under policy ``version`` (None: none)."""
    found = [
        s
        for s in summaries
        if s.split == EVAL_SPLIT and s.task_id == task_id and s.policy_version == version
    ]
    return found[-1] if found else None
