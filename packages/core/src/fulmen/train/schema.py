"""The metrics schema: the one set of key names every backend's ``metrics.jsonl`` uses.

A training run appends one JSON object per event to ``<output_dir>/metrics.jsonl``. Every row
has ``kind`` (``"train"`` or ``"eval"``) and ``step``. The step driver
(:mod:`fulmen.train.driver`) writes the rollout, batch and timing keys itself; the backend's
:meth:`Policy.update <fulmen.train.policy.Policy.update>` returns the update keys. The readers
(``fulmen watch``, ``fulmen dashboard``, the alarms of :mod:`fulmen.observe.alarms`) read
these names and no others: a backend with its own names maps them before they reach a row.

**Train rows** (``kind = "train"``, ``step`` = training steps completed).

Rollout, from the step's episode records (:func:`rollout_metrics`):

=========================  ==========================================================
``reward_mean``            mean outcome reward of the succeeded episodes (0.0 if none)
``reward_std``             population std of those outcomes (0.0 for fewer than two)
``success_rate``           succeeded episodes with outcome > 0, over **all** episodes
``episodes``               episode slots of the step (a retried slot counts once)
``failed_episodes``        slots whose last attempt failed (never trained, never scored)
``infra_failed_episodes``  of those, failed for infrastructure reasons
``retried_episodes``       slots that needed more than one attempt
``timeouts``               slots whose last attempt timed out
``llm_calls``              recorded LLM calls (transitions)
``tool_call_rate``         fraction of LLM calls that asked for a tool
``response_tokens``        generated tokens of the step
``no_signal_groups``       credit groups whose episodes all scored the same
``dropped_groups``         groups dropped for that (``[credit] drop_no_signal``)
``drift_breaks``           prefix merges broken by token drift (``merged`` mode)
=========================  ==========================================================

Batch, written by the driver: ``rows`` (training rows built), ``skipped_update`` (1, only on a
step with no row: nothing was trained) and ``batch/<counter>`` for every counter of
:attr:`fulmen.batch.Batch.stats` (every exclusion is counted there: failed episodes, groups
without signal, unselected agents, untrainable calls, overlong rows...).

Credit, written by the driver when the assigner reports it (:func:`credit_metrics`, keys
:data:`CREDIT_KEYS`):

=====================  =========================================================
``gigpo/step_groups``  ``gigpo`` only: share of the scored calls that sit in a step
                       group of two or more (calls that got any step-level signal;
                       near 0 means ``gigpo`` trains like ``grpo`` on totals)
=====================  =========================================================

Drift, written by the driver from the step's records (:func:`fulmen.drift.step_drift_metrics`,
keys :data:`fulmen.drift.STEP_KEYS`; ``docs/drift.md`` says what to check when one is off):

=====================================  ======================================================
``drift/prefix_pairs``                 consecutive calls of one agent in one episode, both
                                       with ids
``drift/prefix_breaks``                of those, pairs where the later prompt does not start
                                       with the earlier prompt + response ids for a token
                                       reason (retokenisation, template change, unknown), in
                                       every batch mode
``drift/prefix_break_rate``            ``prefix_breaks / prefix_pairs`` (0.0 without pairs)
``drift/prefix_context_changes``       pairs where the agent itself changed its messages (not
                                       drift; never in ``prefix_breaks``)
``drift/render_checked``               chat calls whose recorded messages were re-rendered by
                                       the policy's chat template (only with a policy that
                                       implements :class:`fulmen.drift.TokenView`, as do the
                                       following keys)
``drift/render_mismatches``            of those, calls whose re-rendered ids differ from the
                                       served prompt ids; ``drift/render_mismatch_rate`` the
                                       share
``drift/render_errors``                calls whose messages the template refused
``drift/tool_tail_dropped``            calls whose ids hold a ``<tool_call>`` the response lost
``drift/special_tokens_in_content``    calls (tools offered) whose content holds a special
                                       token
``drift/special_tokens_dropped``       calls whose ids hold a special token before their end
                                       that the content leaves out
``drift/partial_utf8_cut``             ``max_tokens`` cuts whose ids end inside a UTF-8
                                       character
=====================================  ======================================================

And the run so far, on every train row (:func:`fulmen.drift.run_drift_metrics`, keys
:data:`fulmen.drift.RUN_KEYS`): ``drift/run_prefix_break_rate`` and
``drift/run_render_mismatch_rate`` (pooled over every step), ``drift/run_anomalies`` (token
anomalies counted so far), ``drift/run_logprob_abs_diff_mean`` and ``drift/run_logprob_k3``
(weighted by compared tokens) and ``drift/run_logprob_abs_diff_max`` (the largest so far).

Timing, written by the driver: ``rollout_s`` (episodes), ``update_s`` (the policy's update),
``publish_s`` (publishing the new version: the weight sync into the server), ``step_s`` (the
whole step, evaluation included), ``rollout_tokens_per_s`` and ``train_tokens_per_s``
(``num_tokens / update_s``). A backend may break ``update_s`` down further under its own
namespace (fulmen-verl: ``verl/old_logprob_s``...). On an evaluation step also
``eval_success_rate`` (the held-out success of the eval row of the same step).

Update, returned by the backend (:data:`UPDATE_REQUIRED` always, :data:`UPDATE_OPTIONAL` when
the backend measures them; all token-weighted means over the trained tokens unless said):

====================  ===============================================================
``loss``              the optimised loss
``grad_norm``         gradient norm before clipping (mean over optimizer steps)
``num_tokens``        trained tokens
``pg_loss``           policy-gradient part of the loss
``kl``                KL to the frozen reference (the ``kl_coef`` term; 0 without one)
``approx_kl_old``     KL to the rollout policy (verl's ``ppo_kl``)
``entropy``           token entropy of the policy, nats
``clip_fraction``     fraction of tokens whose importance ratio was clipped
``ratio_mean``        mean importance ratio; ``ratio_max`` its maximum
``lr``                learning rate
``num_rows``          rows trained; ``optimizer_steps`` optimizer steps taken
====================  ===============================================================

Rollout vs trainer logprobs, returned by the update when the backend measures them
(:data:`fulmen.drift.UPDATE_KEYS`: the only ``drift/`` keys an update may return). They
compare the logprob the server recorded for each trained token with the trainer's own for the
same token, from a forward pass with the weights the rollout used (the embedded backend: its
first optimizer step's forward; tokens whose rollout logprob was missing and recomputed are
left out):

=================================  ==========================================================
``drift/logprob_tokens``           tokens compared
``drift/logprob_abs_diff_mean``    mean |rollout − trainer| logprob, nats
``drift/logprob_abs_diff_max``     largest |rollout − trainer|
``drift/logprob_k3``               k3 estimate of KL(rollout ‖ trainer): mean of
                                   ``exp(d) − d − 1``, ``d = trainer − rollout``
=================================  ==========================================================

A backend may add its own metrics under a namespace of its own, ``<namespace>/<name>``
(``verl/...``, ``perf/...``); ``batch/`` and ``gigpo/`` are the driver's, and ``drift/`` is
the schema's own.

Per-agent policies (``[[policy]]``, :mod:`fulmen.policies`): the driver adds
``policy/<name>/llm_calls``, ``policy/<name>/rows``, ``policy/<name>/response_tokens``,
``policies/base_llm_calls`` and ``policies/without_rows`` (:func:`fulmen.policies.
policy_step_metrics`); the update returns each policy's own update keys as
``policy/<name>/<key>`` beside the totals.

**Eval rows** (``kind = "eval"``; ``step`` 0 is before training): greedy decoding over the
held-out tasks: ``success_rate``, ``reward_mean``, ``episodes``, ``failed_episodes``
(:data:`EVAL_KEYS`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

from fulmen.drift.metrics import STEP_KEYS as DRIFT_STEP_KEYS
from fulmen.drift.metrics import UPDATE_KEYS as DRIFT_UPDATE_KEYS
from fulmen.errors import BackendError
from fulmen.protocol import EpisodeRecord, EpisodeStatus, TerminationReason

__all__ = [
    "BATCH_PREFIX",
    "CREDIT_KEYS",
    "DRIFT_STEP_KEYS",
    "DRIFT_UPDATE_KEYS",
    "EVAL_KEYS",
    "ROLLOUT_KEYS",
    "TRAIN_KEYS",
    "UPDATE_KEYS",
    "UPDATE_OPTIONAL",
    "UPDATE_REQUIRED",
    "check_update_metrics",
    "credit_metrics",
    "outcome_of",
    "rollout_metrics",
]

ROLLOUT_KEYS: tuple[str, ...] = (
    "reward_mean",
    "reward_std",
    "success_rate",
    "episodes",
    "failed_episodes",
    "infra_failed_episodes",
    "retried_episodes",
    "llm_calls",
    "tool_call_rate",
    "response_tokens",
    "no_signal_groups",
    "dropped_groups",
    "drift_breaks",
    "timeouts",
)
"""Keys of :func:`rollout_metrics`, in row order."""

TRAIN_KEYS: tuple[str, ...] = (
    *ROLLOUT_KEYS,
    "update_s",
    "publish_s",
    "rollout_s",
    "rollout_tokens_per_s",
    "train_tokens_per_s",
    "rows",
    "skipped_update",
    "eval_success_rate",
    "step_s",
)
"""Every key the driver writes on a train row, besides ``batch/*`` and the update's."""

UPDATE_REQUIRED: tuple[str, ...] = ("loss", "grad_norm", "num_tokens")
"""Keys every :meth:`Policy.update <fulmen.train.policy.Policy.update>` returns."""

UPDATE_OPTIONAL: tuple[str, ...] = (
    "pg_loss",
    "kl",
    "approx_kl_old",
    "entropy",
    "clip_fraction",
    "ratio_mean",
    "ratio_max",
    "lr",
    "num_rows",
    "optimizer_steps",
)
"""Keys an update returns when the backend measures them."""

UPDATE_KEYS: frozenset[str] = frozenset((*UPDATE_REQUIRED, *UPDATE_OPTIONAL))
"""Every un-namespaced key an update may return."""

EVAL_KEYS: tuple[str, ...] = ("success_rate", "reward_mean", "episodes", "failed_episodes")
"""Keys of an eval row."""

BATCH_PREFIX = "batch/"
"""Namespace of the batch builder's counters (the driver's, never an update's)."""

CREDIT_KEYS: tuple[str, ...] = ("gigpo/step_groups",)
"""Keys of :func:`credit_metrics` (each present only when its assigner ran)."""

_DRIVER_PREFIXES = (BATCH_PREFIX, *{k.split("/")[0] + "/" for k in CREDIT_KEYS})

_DRIFT_PREFIX = "merge_breaks_"


def check_update_metrics(metrics: Mapping[str, object]) -> dict[str, float]:
    """``metrics`` (what an update returned) as floats, checked against the schema.

    Raises:
        BackendError: a required key is missing, a value is not a finite number, an
            un-namespaced key is not an update key, or a key is in ``batch/`` or ``gigpo/``, or a
            ``drift/`` key is not one of :data:`DRIFT_UPDATE_KEYS`; the message names the key.
    """
    missing = [k for k in UPDATE_REQUIRED if k not in metrics]
    if missing:
        raise BackendError(
            f"the backend's update returned no {', '.join(missing)}: every update reports "
            f"{', '.join(UPDATE_REQUIRED)} (see fulmen.train.schema)"
        )
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if key.startswith(_DRIVER_PREFIXES) or ("/" not in key and key not in UPDATE_KEYS):
            raise BackendError(
                f"the backend's update returned {key!r}, which is not an update key of the "
                f"metrics schema ({', '.join(sorted(UPDATE_KEYS))}); put a backend's own "
                "metric under a namespace of its own, e.g. 'mybackend/name'"
            )
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise BackendError(f"the backend's update returned {key} = {value!r}: not a finite number")
        if key.startswith("drift/") and key not in DRIFT_UPDATE_KEYS:
            raise BackendError(
                f"the backend's update returned {key!r}: the drift/ keys an update may return "
                f"are {', '.join(DRIFT_UPDATE_KEYS)} (see fulmen.train.schema)"
            )
        out[key] = float(value)
    return out


def outcome_of(record: EpisodeRecord) -> float:
    """The episode's outcome: the sum of its main rewards (no name, no step); 0.0 for a failed
    episode or one without such a reward."""
    if record.episode.status is not EpisodeStatus.SUCCEEDED:
        return 0.0
    return sum((r.value for r in record.rewards if r.name is None and r.step is None), 0.0)


def rollout_metrics(
    records: Sequence[EpisodeRecord], batch_stats: Mapping[str, int]
) -> dict[str, float | int]:
    """The rollout keys (:data:`ROLLOUT_KEYS`) of a step: ``records`` are the final attempts
    of its episode slots, ``batch_stats`` the batch builder's counters of those records."""
    ok = [r for r in records if r.episode.status is EpisodeStatus.SUCCEEDED]
    outcomes = [outcome_of(r) for r in ok]
    transitions = [t for r in records for t in r.transitions]
    terminations = [r.episode.termination for r in records if r.episode.status is not EpisodeStatus.SUCCEEDED]
    dropped = batch_stats.get("dropped_groups_no_signal", 0)
    return {
        "reward_mean": statistics.fmean(outcomes) if outcomes else 0.0,
        "reward_std": statistics.pstdev(outcomes) if len(outcomes) > 1 else 0.0,
        "success_rate": sum(o > 0 for o in outcomes) / max(len(records), 1),
        "episodes": len(records),
        "failed_episodes": len(records) - len(ok),
        "infra_failed_episodes": sum(1 for t in terminations if t is not None and t.infrastructure),
        "retried_episodes": sum(r.episode.attempt > 1 for r in records),
        "llm_calls": len(transitions),
        "tool_call_rate": sum(bool(t.tool_calls) for t in transitions) / max(len(transitions), 1),
        "response_tokens": sum(len(t.response_token_ids) for t in transitions),
        # the normalising assigners count every flat group; the outcome ones only those they drop
        "no_signal_groups": max(batch_stats.get("no_signal_groups", 0), dropped),
        "dropped_groups": dropped,
        "drift_breaks": sum(v for k, v in batch_stats.items() if k.startswith(_DRIFT_PREFIX)),
        "timeouts": sum(1 for r in records if r.episode.termination is TerminationReason.TIMEOUT),
    }


def credit_metrics(batch_stats: Mapping[str, int]) -> dict[str, float]:
    """The credit keys (:data:`CREDIT_KEYS`) that ``batch_stats`` (the batch builder's counters
    of one step) can give: ``gigpo/step_groups`` when the ``gigpo`` assigner counted its calls
    (0.0 for a step without any)."""
    out: dict[str, float] = {}
    if "gigpo_calls" in batch_stats:
        calls = batch_stats["gigpo_calls"]
        out["gigpo/step_groups"] = batch_stats.get("gigpo_calls_in_step_groups", 0) / calls if calls else 0.0
    return out
