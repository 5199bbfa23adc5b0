"""Batch building: credited transitions → :class:`fulmen.rows.TrainingRow` + counters.

A trainer calls :func:`build_batch` once per step::

    from fulmen.batch import build_batch, group_records
    from fulmen.credit import assigner_from_config

    assigner = assigner_from_config("turn_grpo", {"gamma": 1.0})
    batch = build_batch(group_records(records), assigner, mode="per_call", max_len=4096)
    log_metrics(batch.stats)   # dropped_groups_no_signal, failed_episodes, merge_breaks_...
    train_on(batch.rows)

Modes: ``per_call`` (default, one exact row per call, :mod:`fulmen.batch.per_call`) and
``merged`` (prefix-merged calls with breaks counted by reason, :mod:`fulmen.batch.merged`).
Imports numpy (through :mod:`fulmen.credit`).
"""

from __future__ import annotations

from fulmen.batch.build import MODES, STAT_KEYS, Batch, Mode, build_batch, group_records
from fulmen.batch.merged import BreakReason, build_merged, classify_break
from fulmen.batch.overlong import OVERLONG_MODES, Overlong, limit_length
from fulmen.batch.per_call import BuiltRows, build_per_call

__all__ = [
    "MODES",
    "OVERLONG_MODES",
    "STAT_KEYS",
    "Batch",
    "BreakReason",
    "BuiltRows",
    "Mode",
    "Overlong",
    "build_batch",
    "build_merged",
    "build_per_call",
    "classify_break",
    "group_records",
    "limit_length",
]
