"""What a watcher shows per policy of a run with ``[[policy]]`` (:mod:`fulmen.policies`).

A run with per-agent policies writes each policy's metrics as ``policy/<name>/<key>`` in its
train rows (the driver's ``llm_calls``, ``rows``, ``response_tokens``; the update's ``loss``,
``kl``, ``grad_norm``... for each policy it updated that step), and the gateway records on every
routed call the policy that served it (``metadata["policy"]``, None for the frozen base) and
that adapter's version (``policy_version``). :func:`policy_views` joins the two: one
:class:`PolicyView` per policy with its agents, the version it serves and its metrics of the
current step. A run without ``[[policy]]`` has neither, and gets no view (empty list).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fulmen.observe.summary import BASE_POLICY, EpisodeSummary

__all__ = [
    "BASE_POLICY",
    "POLICY_CHARTS",
    "POLICY_METRICS",
    "PolicyView",
    "policy_key",
    "policy_names",
    "policy_views",
]

_PREFIX = "policy/"
_BASE_CALLS = "policies/base_llm_calls"

POLICY_METRICS: tuple[tuple[str, str], ...] = (
    ("step calls", "llm_calls"),
    ("rows", "rows"),
    ("response tokens", "response_tokens"),
    ("loss", "loss"),
    ("kl", "kl"),
    ("entropy", "entropy"),
    ("clip fraction", "clip_fraction"),
    ("grad norm", "grad_norm"),
)
"""The per-policy columns: label and the key under ``policy/<name>/`` (:mod:`fulmen.train.schema`)."""

POLICY_CHARTS: tuple[tuple[str, str], ...] = (
    ("loss", "Per policy: loss"),
    ("kl", "Per policy: KL to the reference"),
    ("grad_norm", "Per policy: gradient norm"),
    ("rows", "Per policy: training rows"),
)
"""The dashboard's per-policy charts: the key under ``policy/<name>/`` and the title (one
series per policy)."""


def policy_key(name: str, key: str) -> str:
    """The ``metrics.jsonl`` key of policy ``name``'s metric ``key``."""
    return f"{_PREFIX}{name}/{key}"


def policy_names(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """The policies named in ``rows``' ``policy/<name>/<key>`` keys, in order of first
    appearance (empty for a run without ``[[policy]]``)."""
    names: dict[str, None] = {}
    for row in rows:
        for key in row:
            if key.startswith(_PREFIX):
                name, sep, _ = key[len(_PREFIX) :].rpartition("/")
                if sep and name:
                    names.setdefault(name)
    return list(names)


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyView:
    """One policy as a watcher shows it."""

    name: str
    """The policy's name, or :data:`BASE_POLICY` for calls the frozen base served."""
    agents: tuple[str, ...]
    """Agents whose recorded calls it served (in the watched episodes), in order of first call."""
    version: int | None
    """The highest adapter version of its recorded calls (None: no call seen yet)."""
    calls: int
    """Its recorded calls in the watched episodes."""
    step: int | None
    """The train row its metrics are from (the latest; None before the first)."""
    metrics: Mapping[str, float | None]
    """``key -> value`` of :data:`POLICY_METRICS` in that row; None for a key the row lacks
    (the update's keys are missing in a step that did not update this policy)."""


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def policy_views(
    train_rows: Sequence[Mapping[str, Any]], summaries: Iterable[EpisodeSummary]
) -> list[PolicyView]:
    """One :class:`PolicyView` per policy of the run: the policies of the train rows first (in
    their order), then any other policy the watched calls name, the frozen base last. Empty
    when neither the rows nor the calls name a policy (a run without ``[[policy]]``)."""
    agents: dict[str, dict[str, None]] = {}
    versions: dict[str, int] = {}
    calls: dict[str, int] = {}
    for s in summaries:
        for agent, name in s.policy_of_agent.items():
            agents.setdefault(name, {}).setdefault(agent)
        for name, n in s.calls_by_policy.items():
            calls[name] = calls.get(name, 0) + n
        for name, version in s.policy_versions.items():
            versions[name] = max(version, versions.get(name, version))
    names = policy_names(train_rows)
    names += [n for n in calls if n not in names and n != BASE_POLICY]
    if BASE_POLICY in calls:
        names.append(BASE_POLICY)
    last = train_rows[-1] if train_rows else None
    step = _number(last.get("step")) if last is not None else None
    return [
        PolicyView(
            name=name,
            agents=tuple(agents.get(name, {})),
            version=versions.get(name),
            calls=calls.get(name, 0),
            step=None if step is None else int(step),
            metrics=_metrics(last, name),
        )
        for name in names
    ]


def _metrics(row: Mapping[str, Any] | None, name: str) -> dict[str, float | None]:
    out = {
        key: None if row is None else _number(row.get(policy_key(name, key)))
        for _, key in POLICY_METRICS
    }
    if name == BASE_POLICY and row is not None:
        out["llm_calls"] = _number(row.get(_BASE_CALLS))
    return out
