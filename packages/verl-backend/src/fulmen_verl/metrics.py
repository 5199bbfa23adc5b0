"""What :meth:`VerlPolicy.update <fulmen_verl.policy.VerlPolicy.update>` reports: verl's update
metrics under the metrics schema's names (:mod:`fulmen.train.schema`), and the update's time
broken down by phase.

A train row of a verl run (``metrics.jsonl``) times each step as (names stable; the README's
step-time table reads them):

==========================  ==============================================================
``rollout_s``               the step's episodes (the driver's)
``update_s``                the whole update (the driver's): the keys below, plus the
                            DataProto and DP balancing
``verl/old_logprob_s``      the trainer's old-logprob forward pass (``recompute`` mode, or
                            rows with unknown rollout logprobs; 0.0 in ``bypass`` mode)
``verl/ref_s``              the reference policy's forward pass (0.0 without ``kl_coef``)
``verl/actor_update_s``     the actor's update (forward, backward, optimizer steps)
``verl/sleep_s``            putting vLLM to sleep before the update (frees GPU memory;
                            nothing to free on the CPU platform)
``publish_s``               the weight sync into vLLM (the driver's, around
                            ``CheckpointEngineManager.update_weights``)
==========================  ==============================================================
"""

from __future__ import annotations

from collections.abc import Mapping

from fulmen_verl.step import OLD_LOGPROB_S, REF_S

__all__ = [
    "ACTOR_UPDATE_S",
    "OLD_LOGPROB_S",
    "REF_S",
    "SLEEP_S",
    "STEP_TIME_KEYS",
    "VERL_METRIC_NAMES",
    "schema_update_metrics",
]

ACTOR_UPDATE_S = "verl/actor_update_s"
"""Seconds of the actor update (verl's ``update_actor`` on the workers)."""

SLEEP_S = "verl/sleep_s"
"""Seconds of ``CheckpointEngineManager.sleep_replicas`` before the update."""

STEP_TIME_KEYS: tuple[str, ...] = (SLEEP_S, OLD_LOGPROB_S, REF_S, ACTOR_UPDATE_S)
"""The update's own phase timings (every update returns all of them)."""

VERL_METRIC_NAMES: Mapping[str, str] = {
    "actor/loss": "loss",
    "actor/pg_loss": "pg_loss",
    "actor/grad_norm": "grad_norm",
    "actor/lr": "lr",
    "actor/pg_clipfrac": "clip_fraction",
    "actor/ppo_kl": "approx_kl_old",
    "actor/kl_loss": "kl",
    "actor/entropy": "entropy",
    "actor/entropy_loss": "entropy",
}
"""verl's names of the update metrics (``actor/*`` after :func:`fulmen_verl.step.update_actor`)
→ the metrics schema's (:mod:`fulmen.train.schema`). verl 0.9's engine workers report the
mean token entropy as ``actor/entropy_loss``; its legacy workers as ``actor/entropy``."""


def schema_update_metrics(
    verl_metrics: Mapping[str, float], *, trained_tokens: int
) -> dict[str, float]:
    """verl's update metrics under the schema's names (:data:`VERL_METRIC_NAMES`); verl's
    other metrics keep their namespaced names (``actor/pg_clipfrac_lower``, ``perf/...``), an
    un-namespaced one goes under ``verl/``. ``num_tokens`` (not a verl metric) is
    ``trained_tokens``, the batch's trained tokens."""
    out: dict[str, float] = {}
    for key, value in verl_metrics.items():
        name = VERL_METRIC_NAMES.get(key)
        out[name if name is not None else key if "/" in key else f"verl/{key}"] = float(value)
    out["num_tokens"] = float(trained_tokens)
    return out
