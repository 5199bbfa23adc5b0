"""Alarms: pure checks over training metrics rows and finished episodes.

Each check looks at the history of ``metrics.jsonl`` rows (keys of the metrics schema,
:mod:`fulmen.train.schema`, which every backend writes; rows without ``kind`` count as
``train``) or at recently finished episodes, and
returns :class:`Alarm` values that say what is wrong and what to look at. Nothing here does
I/O except :class:`AlarmMonitor`, which logs each alarm once per step as a warning on the
``fulmen.alarms`` logger.

The alarms and their thresholds (:class:`AlarmThresholds`, ``[alarms]`` in the training config,
``fulmen watch --threshold NAME=VALUE``):

* ``entropy_collapse``: the policy's token entropy (``entropy``) fell
  below ``entropy_drop_ratio`` × its baseline (the highest of the first ``baseline_steps``
  steps; warning) or below ``entropy_floor`` nats per token (critical).
* ``tool_calls_vanishing``: ``tool_call_rate`` fell below ``tool_rate_drop_ratio`` × its peak,
  for an agent whose peak was at least ``tool_rate_min_peak`` (warning; critical at 0).
* ``no_reward_variance``: more than ``no_signal_group_fraction`` of the step's groups had the
  same reward for every episode (``no_signal_groups`` / ``batch/groups``; warning;
  critical when no group had signal: the step trained nothing).
* ``drift_breaks_rising``: token-drift breaks (``batch/merge_breaks_retokenisation`` +
  ``_template_change`` + ``_other``) per merge point above ``drift_break_rate`` (warning;
  critical when it also rose over each of the last ``drift_rise_steps`` steps).
* ``logprob_drift``: the logprobs the server recorded and the trainer's own for the same
  tokens differ (``drift/logprob_k3`` above ``logprob_drift_k3``, or
  ``drift/logprob_abs_diff_mean`` above ``logprob_drift_mean``; warning; critical above ten
  times either): the importance ratio measures serving/training mismatch, not policy change.
* ``prompt_drift``: the recorded messages re-rendered by the chat template differ from the
  served prompt ids on more than ``render_mismatch_rate`` of the checked calls, or token
  anomalies (``drift/tool_tail_dropped``, ``drift/special_tokens_in_content``,
  ``drift/special_tokens_dropped``, ``drift/partial_utf8_cut``) hit more than ``token_anomaly_rate`` of the LLM calls (warning).
* ``infra_failures``: more than ``infra_failure_rate`` of the episodes (of the step, or of
  the last ``episode_window`` finished ones) ended for infrastructure reasons (upstream error,
  crash, cancellation: :attr:`~fulmen.protocol.TerminationReason.infrastructure`), once at
  least ``min_episodes`` finished (warning; critical above twice the rate).
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

from fulmen.drift.tokens import ANOMALY_KINDS
from fulmen.protocol import Episode

__all__ = [
    "ALARM_KINDS",
    "Alarm",
    "AlarmKind",
    "AlarmMonitor",
    "AlarmThresholds",
    "Severity",
    "check_episodes",
    "check_metrics",
    "merge_alarms",
    "parse_threshold",
]

logger = logging.getLogger("fulmen.alarms")

AlarmKind = Literal[
    "entropy_collapse",
    "tool_calls_vanishing",
    "no_reward_variance",
    "drift_breaks_rising",
    "logprob_drift",
    "prompt_drift",
    "infra_failures",
]
ALARM_KINDS: tuple[AlarmKind, ...] = (
    "entropy_collapse",
    "tool_calls_vanishing",
    "no_reward_variance",
    "drift_breaks_rising",
    "logprob_drift",
    "prompt_drift",
    "infra_failures",
)
Severity = Literal["warning", "critical"]
_DRIFT_KEYS = ("merge_breaks_retokenisation", "merge_breaks_template_change", "merge_breaks_other")


@dataclass(frozen=True, slots=True, kw_only=True)
class Alarm:
    """Something in the run that needs a look."""

    kind: AlarmKind
    """Which check fired."""
    severity: Severity
    """``warning`` (watch it) or ``critical`` (training is probably wasting steps)."""
    message: str
    """What happened, with the numbers."""
    what_to_look_at: str
    """Where to start looking."""
    step: int | None = None
    """Training step of the metrics row that fired it (None for episode-based alarms)."""
    value: float | None = None
    """The measured value."""
    threshold: float | None = None
    """The threshold it crossed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AlarmThresholds:
    """When each alarm fires (see the module docstring). All fields are plain numbers."""

    entropy_drop_ratio: float = 0.2
    """Warn when entropy falls below this fraction of its baseline."""
    entropy_floor: float = 0.01
    """Critical when entropy (nats per token) falls below this."""
    baseline_steps: int = 3
    """Steps whose highest entropy is the baseline."""
    tool_rate_drop_ratio: float = 0.25
    """Warn when the tool-call rate falls below this fraction of its peak."""
    tool_rate_min_peak: float = 0.05
    """Only agents whose tool-call rate peaked at least this high are checked."""
    no_signal_group_fraction: float = 0.75
    """Warn when more than this fraction of a step's groups had no reward variance."""
    drift_break_rate: float = 0.05
    """Warn when token-drift breaks per merge point exceed this."""
    drift_rise_steps: int = 3
    """Critical when the drift rate also rose over each of this many last steps."""
    logprob_drift_k3: float = 0.01
    """Warn when the k3 KL(rollout ‖ trainer) per token exceeds this (critical at 10x)."""
    logprob_drift_mean: float = 0.1
    """Warn when the mean |rollout − trainer| logprob (nats) exceeds this (critical at 10x)."""
    render_mismatch_rate: float = 0.02
    """Warn when more than this share of re-rendered prompts differ from the served ids."""
    token_anomaly_rate: float = 0.02
    """Warn when token anomalies hit more than this share of a step's LLM calls."""
    infra_failure_rate: float = 0.1
    """Warn when more than this fraction of episodes failed for infrastructure reasons."""
    min_episodes: int = 8
    """Episodes needed before ``infra_failures`` is judged."""
    episode_window: int = 200
    """Finished episodes the episode-based check looks at (the most recent)."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"alarm threshold {f.name}: expected a number >= 0, got {value!r}")


def parse_threshold(text: str, base: AlarmThresholds | None = None) -> AlarmThresholds:
    """``base`` (default thresholds when None) with one ``NAME=VALUE`` override applied.

    Raises:
        ValueError: not ``NAME=VALUE``, an unknown name (the message lists them) or a bad value.
    """
    from dataclasses import replace

    base = base or AlarmThresholds()
    name, sep, raw = text.partition("=")
    names = [f.name for f in fields(AlarmThresholds)]
    if not sep or name.strip() not in names:
        raise ValueError(
            f"threshold {text!r}: expected NAME=VALUE with NAME one of {', '.join(names)}"
        )
    current = getattr(base, name.strip())
    try:
        value: float = int(raw) if isinstance(current, int) else float(raw)
    except ValueError:
        raise ValueError(f"threshold {text!r}: {raw!r} is not a number") from None
    return replace(base, **{name.strip(): value})


def _num(row: Mapping[str, Any], key: str) -> float | None:
    """``row[key]`` when it is a finite number, else None."""
    value = row.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _train_rows(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in rows if r.get("kind", "train") == "train"]


def _step(row: Mapping[str, Any]) -> int | None:
    step = row.get("step")
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def check_metrics(
    rows: Sequence[Mapping[str, Any]], thresholds: AlarmThresholds | None = None
) -> list[Alarm]:
    """Alarms for the latest training row of ``rows`` (the history, oldest first).

    Rows of other kinds (``eval``) are ignored; a row without ``kind`` is a training row.
    Missing metrics skip their check. Returns alarms in :data:`ALARM_KINDS` order.
    """
    th = thresholds or AlarmThresholds()
    train = _train_rows(rows)
    if not train:
        return []
    alarms = [
        _entropy(train, th),
        _tool_rate(train, th),
        _no_variance(train[-1], th),
        _drift(train, th),
        _logprob_drift(train[-1], th),
        _prompt_drift(train[-1], th),
        _infra_from_row(train[-1], th),
    ]
    return [a for a in alarms if a is not None]


def _entropy(train: Sequence[Mapping[str, Any]], th: AlarmThresholds) -> Alarm | None:
    series = [(r, v) for r in train if (v := _num(r, "entropy")) is not None]
    if not series:
        return None
    row, latest = series[-1]
    look = (
        "the sampling temperature ([train] temperature), the learning rate and clip range, and "
        "whether the reward is easy to game with one fixed answer: read a few recent episodes "
        "(fulmen show EPISODE) for identical outputs"
    )
    if latest < th.entropy_floor:
        return Alarm(
            kind="entropy_collapse",
            severity="critical",
            step=_step(row),
            value=latest,
            threshold=th.entropy_floor,
            what_to_look_at=look,
            message=f"entropy {latest:.4f} nats/token is below the floor {th.entropy_floor:g}: "
            "the policy has stopped exploring",
        )
    baseline_values = [v for _, v in series[: max(int(th.baseline_steps), 1)]]
    if len(series) <= len(baseline_values):
        return None
    baseline = max(baseline_values)
    if baseline > 0 and latest < th.entropy_drop_ratio * baseline:
        return Alarm(
            kind="entropy_collapse",
            severity="warning",
            step=_step(row),
            value=latest,
            threshold=th.entropy_drop_ratio * baseline,
            what_to_look_at=look,
            message=f"entropy fell to {latest:.4f} from {baseline:.4f} in the first steps "
            f"(below {th.entropy_drop_ratio:.0%} of it): exploration is collapsing",
        )
    return None


def _tool_rate(train: Sequence[Mapping[str, Any]], th: AlarmThresholds) -> Alarm | None:
    series = [(r, v) for r in train if (v := _num(r, "tool_call_rate")) is not None]
    if len(series) < 2:
        return None
    row, latest = series[-1]
    peak = max(v for _, v in series[:-1])
    if peak < th.tool_rate_min_peak or latest >= th.tool_rate_drop_ratio * peak:
        return None
    return Alarm(
        kind="tool_calls_vanishing",
        severity="critical" if latest == 0 else "warning",
        step=_step(row),
        value=latest,
        threshold=th.tool_rate_drop_ratio * peak,
        message=f"tool-call rate fell to {latest:.1%} of LLM calls from a peak of {peak:.1%}",
        what_to_look_at="whether answering without tools earns the same reward (reward the tool "
        "use or the verified answer), tool errors in recent episodes' tool results, and "
        "truncated responses (finish reason 'length' cuts tool calls off)",
    )


def _no_variance(row: Mapping[str, Any], th: AlarmThresholds) -> Alarm | None:
    groups = _num(row, "batch/groups")
    flat = _num(row, "no_signal_groups")
    if not groups or flat is None:
        return None
    fraction = flat / groups
    if fraction <= th.no_signal_group_fraction:
        return None
    return Alarm(
        kind="no_reward_variance",
        severity="critical" if flat >= groups else "warning",
        step=_step(row),
        value=fraction,
        threshold=th.no_signal_group_fraction,
        message=f"{flat:.0f} of {groups:.0f} groups got the same reward for every episode "
        f"({fraction:.0%}): they carry no learning signal",
        what_to_look_at="the reward function on a few episodes (always 0 or always 1?), task "
        "difficulty for the current policy, [train] group_size and temperature (more diverse "
        "samples), and a partial-credit reward dimension",
    )


def _drift_rate(row: Mapping[str, Any]) -> float | None:
    merged = _num(row, "batch/merged_calls")
    breaks = _num(row, "batch/merge_breaks")
    if merged is None or breaks is None or merged + breaks == 0:
        return None
    drift = sum(_num(row, f"batch/{k}") or 0.0 for k in _DRIFT_KEYS)
    return drift / (merged + breaks)


def _drift(train: Sequence[Mapping[str, Any]], th: AlarmThresholds) -> Alarm | None:
    rates = [(r, v) for r in train if (v := _drift_rate(r)) is not None]
    if not rates:
        return None
    row, latest = rates[-1]
    if latest <= th.drift_break_rate:
        return None
    n = max(int(th.drift_rise_steps), 1)
    recent = [v for _, v in rates[-(n + 1) :]]
    rising = len(recent) == n + 1 and all(b > a for a, b in itertools.pairwise(recent))
    return Alarm(
        kind="drift_breaks_rising",
        severity="critical" if rising else "warning",
        step=_step(row),
        value=latest,
        threshold=th.drift_break_rate,
        message=f"{latest:.1%} of merge points broke on token drift"
        + (f", rising over the last {n} steps" if rising else ""),
        what_to_look_at="batch/merge_breaks_retokenisation (the agent re-sends text that "
        "tokenises differently: keep the exact assistant messages), _template_change (the chat "
        "template rewrites earlier turns, e.g. drops reasoning), or use [batch] mode = "
        '"per_call", which never merges',
    )


def _logprob_drift(row: Mapping[str, Any], th: AlarmThresholds) -> Alarm | None:
    # fulmen-verl's bypass mode reports the k3 alone (from its loss), without the token count
    k3 = _num(row, "drift/logprob_k3")
    mean = _num(row, "drift/logprob_abs_diff_mean")
    if k3 is None or _num(row, "drift/logprob_tokens") == 0:
        return None
    over = max(k3 / th.logprob_drift_k3 if th.logprob_drift_k3 else 0.0,
               (mean or 0.0) / th.logprob_drift_mean if th.logprob_drift_mean else 0.0)  # fmt: skip
    if over <= 1.0:
        return None
    worst = _num(row, "drift/logprob_abs_diff_max")
    detail = "" if mean is None or worst is None else f", mean |Δ| {mean:.4f}, max |Δ| {worst:.3f} nats"
    return Alarm(
        kind="logprob_drift",
        severity="critical" if over > 10.0 else "warning",
        step=_step(row),
        value=k3,
        threshold=th.logprob_drift_k3,
        message=f"the trainer's logprobs differ from the server's on the same tokens: k3 KL "
        f"{k3:.4f}/token{detail}",
        what_to_look_at="whether the server and the trainer run the same weights (a publish that "
        "did not reach the server, a stale policy version), the same dtype and kernels (bf16 "
        "serving vs fp32 training), the same sampling logprobs (raw, not temperature-processed), "
        "and constrained decoding (forced tool choice): docs/drift.md",
    )


_ANOMALY_KEYS = tuple(f"drift/{k}" for k in ANOMALY_KINDS)


def _prompt_drift(row: Mapping[str, Any], th: AlarmThresholds) -> Alarm | None:
    checked = _num(row, "drift/render_checked")
    rate = (_num(row, "drift/render_mismatches") or 0.0) / checked if checked else 0.0
    calls = _num(row, "llm_calls")
    anomalies = {k: v for k in _ANOMALY_KEYS if (v := _num(row, k))}
    anomaly_rate = sum(anomalies.values()) / calls if calls else 0.0
    if rate <= th.render_mismatch_rate and anomaly_rate <= th.token_anomaly_rate:
        return None
    parts: list[str] = []
    if rate > th.render_mismatch_rate:
        parts.append(f"{rate:.1%} of the re-rendered prompts differ from the served ids")
    if anomaly_rate > th.token_anomaly_rate:
        parts.append(", ".join(f"{v:.0f} {k.removeprefix('drift/')}" for k, v in anomalies.items())
                     + f" in {calls:.0f} calls")  # fmt: skip
    return Alarm(
        kind="prompt_drift",
        severity="warning",
        step=_step(row),
        value=rate if rate > th.render_mismatch_rate else anomaly_rate,
        threshold=th.render_mismatch_rate if rate > th.render_mismatch_rate else th.token_anomaly_rate,
        message="; ".join(parts) + ": the tokens trained are not the text the agent saw",
        what_to_look_at="fulmen show EPISODE --drift on a recent episode (first diverging token), "
        "the chat template and chat_template_kwargs the server uses against the policy's, "
        "the server's tool parser (a dropped <tool_call> tail, special tokens in content), "
        "special tokens the model generated mid-answer that the content drops, and max_tokens cuts: docs/drift.md",
    )


def _infra_alarm(
    failed: int, total: int, th: AlarmThresholds, step: int | None, where: str
) -> Alarm | None:
    if total < max(int(th.min_episodes), 1):
        return None
    rate = failed / total
    if rate <= th.infra_failure_rate:
        return None
    return Alarm(
        kind="infra_failures",
        severity="critical" if rate > 2 * th.infra_failure_rate else "warning",
        step=step,
        value=rate,
        threshold=th.infra_failure_rate,
        message=f"{failed} of {total} {where} failed for infrastructure reasons ({rate:.0%})",
        what_to_look_at="the episodes' errors (fulmen episodes --status failed, fulmen show "
        "EPISODE), the inference server's health and logs, its concurrency limits against "
        "[agent] concurrency, and the gateway's upstream timeouts",
    )


def _infra_from_row(row: Mapping[str, Any], th: AlarmThresholds) -> Alarm | None:
    failed = _num(row, "infra_failed_episodes")
    total = _num(row, "episodes")
    if failed is None or not total:
        return None
    return _infra_alarm(int(failed), int(total), th, _step(row), "episodes of the step")


def check_episodes(
    episodes: Sequence[Episode], thresholds: AlarmThresholds | None = None
) -> list[Alarm]:
    """Alarms over the most recent finished ``episodes`` (oldest first; unfinished ignored).

    Works without training metrics (a bare gateway): today the ``infra_failures`` check.
    """
    th = thresholds or AlarmThresholds()
    done = [e for e in episodes if e.status.finished][-max(int(th.episode_window), 1) :]
    failed = sum(1 for e in done if e.termination is not None and e.termination.infrastructure)
    alarm = _infra_alarm(failed, len(done), th, None, "recent episodes")
    return [alarm] if alarm is not None else []


def merge_alarms(*groups: Iterable[Alarm]) -> list[Alarm]:
    """One alarm per kind (the critical one when two disagree), in :data:`ALARM_KINDS` order."""
    best: dict[AlarmKind, Alarm] = {}
    for alarm in (a for g in groups for a in g):
        kept = best.get(alarm.kind)
        if kept is None or (kept.severity == "warning" and alarm.severity == "critical"):
            best[alarm.kind] = alarm
    return [best[k] for k in ALARM_KINDS if k in best]


class AlarmMonitor:
    """Checks each new metrics row against the history and logs what fires.

    Each alarm is logged once per step (``(step, kind)``) as a warning on ``fulmen.alarms``,
    with what to look at. Not thread-safe: one training loop owns one monitor.

    Args:
        thresholds: When alarms fire (defaults: :class:`AlarmThresholds`).
        history: Earlier rows of the run (``metrics.jsonl`` on ``--resume``), oldest first.
    """

    def __init__(
        self,
        thresholds: AlarmThresholds | None = None,
        *,
        history: Iterable[Mapping[str, Any]] = (),
    ) -> None:
        self.thresholds = thresholds or AlarmThresholds()
        self._rows: list[Mapping[str, Any]] = _train_rows(history)
        self._logged: set[tuple[int | None, AlarmKind]] = set()

    def observe(self, row: Mapping[str, Any]) -> list[Alarm]:
        """Add ``row`` (a training row; others are ignored) and return the alarms it raises."""
        if row.get("kind", "train") != "train":
            return []
        self._rows.append(dict(row))
        alarms = check_metrics(self._rows, self.thresholds)
        for alarm in alarms:
            key = (alarm.step, alarm.kind)
            if key in self._logged:
                continue
            self._logged.add(key)
            logger.warning(
                "step %s: %s alarm (%s): %s. Look at: %s",
                alarm.step,
                alarm.kind,
                alarm.severity,
                alarm.message,
                alarm.what_to_look_at,
            )
        return alarms
