"""Drift figures of a training step (:func:`step_drift_metrics`) and of a run
(:func:`run_drift_summary`), under the ``drift/`` keys of :mod:`fulmen.train.schema`.

The step driver writes :data:`STEP_KEYS` from the step's episode records (the ``render`` and
token-anomaly keys only when the policy implements :class:`~fulmen.drift.tokens.TokenView`);
the backend's update returns :data:`UPDATE_KEYS` from its own forward pass (rollout vs trainer
logprobs on the same tokens). None of these change what is trained.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from fulmen.drift.prefix import prefix_checks
from fulmen.drift.tokens import ANOMALY_KINDS, TokenView, render_check, token_anomalies
from fulmen.protocol import EpisodeRecord

__all__ = [
    "LOGPROB_KEYS",
    "PREFIX_KEYS",
    "RENDER_KEYS",
    "RUN_KEYS",
    "STEP_KEYS",
    "UPDATE_KEYS",
    "run_drift_metrics",
    "run_drift_summary",
    "step_drift_metrics",
]

logger = logging.getLogger("fulmen.drift")

PREFIX_KEYS: tuple[str, ...] = (
    "drift/prefix_pairs",
    "drift/prefix_breaks",
    "drift/prefix_break_rate",
    "drift/prefix_context_changes",
)
RENDER_KEYS: tuple[str, ...] = (
    "drift/render_checked",
    "drift/render_mismatches",
    "drift/render_mismatch_rate",
    "drift/render_errors",
    *(f"drift/{k}" for k in ANOMALY_KINDS),
)
STEP_KEYS: tuple[str, ...] = (*PREFIX_KEYS, *RENDER_KEYS)
"""Keys the driver writes (:func:`step_drift_metrics`)."""

LOGPROB_KEYS: tuple[str, ...] = (
    "drift/logprob_tokens",
    "drift/logprob_abs_diff_mean",
    "drift/logprob_abs_diff_max",
    "drift/logprob_k3",
)
UPDATE_KEYS: tuple[str, ...] = LOGPROB_KEYS
"""``drift/`` keys a backend's update may return (and no other ``drift/`` key)."""


RUN_KEYS: tuple[str, ...] = (
    "drift/run_prefix_break_rate",
    "drift/run_render_mismatch_rate",
    "drift/run_anomalies",
    "drift/run_logprob_abs_diff_mean",
    "drift/run_logprob_abs_diff_max",
    "drift/run_logprob_k3",
)
"""The run's figures so far, written on every train row (:func:`run_drift_metrics`)."""


def step_drift_metrics(records: Sequence[EpisodeRecord], view: TokenView | None) -> dict[str, float]:
    """The step's :data:`STEP_KEYS` over ``records`` (every call recorded, trained or not);
    without ``view`` only :data:`PREFIX_KEYS`. A template that fails on a call's messages is
    counted in ``drift/render_errors`` (and logged), never raised."""
    checks = [c for r in records for c in prefix_checks(r)]
    breaks = sum(c.token_drift for c in checks)
    out: dict[str, float] = {
        "drift/prefix_pairs": float(len(checks)),
        "drift/prefix_breaks": float(breaks),
        "drift/prefix_break_rate": breaks / len(checks) if checks else 0.0,
        "drift/prefix_context_changes": float(sum(c.reason is not None and not c.token_drift for c in checks)),
    }
    if view is None:
        return out
    checked = mismatches = errors = 0
    anomalies: Counter[str] = Counter({k: 0 for k in ANOMALY_KINDS})
    for t in (t for r in records for t in r.transitions):
        anomalies.update(token_anomalies(t, view))
        try:
            check = render_check(t, view)
        except Exception as exc:  # a template's own error: diagnostics never stop training
            errors += 1
            logger.warning("drift: re-rendering call %s failed: %s", t.request_id or t.seq, exc)
            continue
        if check is not None:
            checked += 1
            mismatches += not check.matches
    out.update({
        "drift/render_checked": float(checked),
        "drift/render_mismatches": float(mismatches),
        "drift/render_mismatch_rate": mismatches / checked if checked else 0.0,
        "drift/render_errors": float(errors),
    })
    out.update({f"drift/{k}": float(v) for k, v in anomalies.items()})
    return out


def _num(row: Mapping[str, Any], key: str) -> float | None:
    value = row.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def run_drift_summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """The run's drift so far, from its train rows (``metrics.jsonl``, oldest first): totals
    of the counts, rates over the whole run, the token-weighted mean |Δ| and k3, the largest
    |Δ|. Keys as :data:`STEP_KEYS` / :data:`UPDATE_KEYS`; a key no row had is absent. Rows
    with a ``drift/logprob_k3`` but no token count (fulmen-verl's bypass mode) give the plain
    mean of their k3 when no row has a count."""
    train = [r for r in rows if r.get("kind", "train") == "train"]
    out: dict[str, float] = {}
    sums: dict[str, float] = {}
    for key in (*STEP_KEYS, *UPDATE_KEYS):
        if key.endswith(("_rate", "_mean", "_max", "_k3")):
            continue
        values = [v for r in train if (v := _num(r, key)) is not None]
        if values:
            sums[key] = sum(values)
    out.update(sums)
    for rate, num, den in (
        ("drift/prefix_break_rate", "drift/prefix_breaks", "drift/prefix_pairs"),
        ("drift/render_mismatch_rate", "drift/render_mismatches", "drift/render_checked"),
    ):
        if den in sums:
            out[rate] = sums[num] / sums[den] if sums[den] else 0.0
    weighted = [
        (w, r) for r in train if (w := _num(r, "drift/logprob_tokens")) is not None and w > 0
    ]
    k3_only = [v for r in train if "drift/logprob_tokens" not in r and (v := _num(r, "drift/logprob_k3")) is not None]
    if k3_only and not weighted:  # fulmen-verl's bypass mode: the k3 of its loss, no token count
        out["drift/logprob_k3"] = sum(k3_only) / len(k3_only)
    if weighted:
        total = sum(w for w, _ in weighted)
        for key in ("drift/logprob_abs_diff_mean", "drift/logprob_k3"):
            out[key] = sum(w * (_num(r, key) or 0.0) for w, r in weighted) / total
        out["drift/logprob_abs_diff_max"] = max(_num(r, "drift/logprob_abs_diff_max") or 0.0 for _, r in weighted)
    return out


def run_drift_metrics(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """:data:`RUN_KEYS` from :func:`run_drift_summary` of ``rows`` (the run's train rows so far,
    the current one included): the two rates pooled over the run, ``drift/run_anomalies`` the
    token anomalies counted so far, and the logprob figures; a figure no row had is absent."""
    summary = run_drift_summary(rows)
    out = {
        f"drift/run_{key.removeprefix('drift/')}": value
        for key, value in summary.items()
        if f"drift/run_{key.removeprefix('drift/')}" in RUN_KEYS
    }
    anomalies = [summary[f"drift/{k}"] for k in ANOMALY_KINDS if f"drift/{k}" in summary]
    if anomalies:
        out["drift/run_anomalies"] = sum(anomalies)
    return out
