"""The training curves: which metrics each chart plots, as JSON series over training steps."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fulmen.observe.per_policy import POLICY_CHARTS, policy_key, policy_names
from fulmen.observe.state import METRICS, metric_value

__all__ = ["CHARTS", "Chart", "curves_json"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Chart:
    """One chart: a title and its series as ``(metric, label)``.

    A metric is a name of :data:`~fulmen.observe.state.METRICS` (read from ``train`` rows),
    ``eval:KEY`` for ``KEY`` of the ``eval`` rows (held-out evaluation, step 0 included), or a
    policy's own ``policy/<name>/<key>`` (read from ``train`` rows as it is).
    """

    id: str
    title: str
    series: tuple[tuple[str, str], ...]


CHARTS: tuple[Chart, ...] = (
    Chart(
        id="reward",
        title="Reward and success",
        series=(
            ("reward", "reward (train mean)"),
            ("success", "success (train)"),
            ("eval:success_rate", "held-out success"),
        ),
    ),
    Chart(
        id="policy",
        title="KL, clip fraction, entropy",
        series=(("kl", "KL"), ("clip_fraction", "clip fraction"), ("entropy", "entropy")),
    ),
    Chart(
        id="throughput",
        title="Tokens per second",
        series=(("rollout_tokens_per_s", "rollout"), ("train_tokens_per_s", "training")),
    ),
    Chart(
        id="health",
        title="Dropped groups, drift breaks, infrastructure failures",
        series=(
            ("dropped_groups", "dropped groups (no signal)"),
            ("drift_breaks", "token-drift breaks"),
            ("infra_failed", "failed episodes (infra)"),
        ),
    ),
    Chart(id="tools", title="Tool calls per LLM call", series=(("tool_call_rate", "tool-call rate"),)),
    Chart(
        id="drift",
        title="Token drift: rollout vs trainer logprobs, re-rendered prompts, prefix breaks",
        series=(
            ("logprob_drift", "mean |Δ logprob|"),
            ("logprob_drift_max", "max |Δ logprob|"),
            ("logprob_k3", "k3 KL(rollout ‖ trainer)"),
            ("render_mismatch_rate", "re-render mismatch rate"),
            ("prefix_break_rate", "prefix break rate"),
        ),
    ),
)
"""The curves page, top to bottom."""


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _series(rows: Sequence[Mapping[str, Any]], metric: str) -> tuple[list[int], list[float]]:
    if metric.startswith("eval:"):
        key = metric.removeprefix("eval:")
    else:
        key = metric if metric.startswith("policy/") else METRICS[metric]
    xs: list[int] = []
    ys: list[float] = []
    for i, row in enumerate(rows):
        y = _number(metric_value(row, key))
        if y is None:
            continue
        step = row.get("step")
        xs.append(step if isinstance(step, int) and not isinstance(step, bool) else i + 1)
        ys.append(y)
    return xs, ys


def curves_json(
    train: Sequence[Mapping[str, Any]], evals: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """Every chart of :data:`CHARTS` with its series: ``{"charts": [...], "steps": N}``; a run
    with ``[[policy]]`` (``policy/<name>/...`` keys in its rows) gets the charts of
    :data:`~fulmen.observe.per_policy.POLICY_CHARTS` after them, one series per policy.

    Each series is ``{"metric", "label", "x", "y"}`` with the steps where the metric is a
    finite number (rows without ``step`` count by position); ``steps`` is the number of
    training rows.
    """
    charts: list[dict[str, Any]] = []
    names = policy_names(train)
    per_policy = tuple(
        Chart(
            id=f"policy-{key.replace('_', '-')}",
            title=title,
            series=tuple((policy_key(name, key), name) for name in names),
        )
        for key, title in POLICY_CHARTS
        if names
    )
    for chart in (*CHARTS, *per_policy):
        series: list[dict[str, Any]] = []
        for metric, label in chart.series:
            xs, ys = _series(evals if metric.startswith("eval:") else train, metric)
            series.append({"metric": metric, "label": label, "x": xs, "y": ys})
        charts.append({"id": chart.id, "title": chart.title, "series": series})
    return {"charts": charts, "steps": len(train)}
