"""One policy update on verl's workers, from a ``DataProto`` of fulmen rows.

Everything numerical is verl's: the DP balancing (``RayPPOTrainer._balance_batch``), the
old-logprob forward pass, rollout correction (``rollout_corr_helper``), the reference forward
for the KL loss, the policy loss (``verl.workers.utils.losses.ppo_loss`` with the configured
``policy_loss.loss_mode``, run inside the FSDP workers) and the optimizer. This module only
wires them in the order verl's own ``RayPPOTrainer.fit`` does, minus the parts fulmen
replaces (generation, reward, advantage estimation).

verl 0.9.1 has no public API for these steps; the ``RayPPOTrainer`` methods used here are
private (``_balance_batch``, ``_compute_old_log_prob``, ``_compute_ref_log_prob``,
``_get_dp_size``). That is why the dependency is pinned to ``verl==0.9.1``.

Two modes (``[verl] old_logprobs``):

* ``bypass`` (default): ``old_log_probs`` = the exact rollout logprobs the gateway recorded
  (verl ``apply_bypass_mode``); the loss is verl's ``bypass_mode`` policy loss, whose PPO ratio
  is taken against the policy that actually sampled. No extra forward pass.
* ``recompute``: the trainer recomputes ``old_log_probs``; verl's
  ``compute_rollout_correction_and_add_to_batch`` turns the recorded rollout logprobs into
  truncated importance weights (TIS) and optional rejection masks.

In both modes, tokens whose rollout logprob is unknown (:data:`MISSING_LOGPROBS_KEY`) get the
trainer's recomputed logprob in place of the 0.0 placeholder before either of the above.

Whenever the trainer computes old logprobs (``recompute``, or unknown rollout logprobs), the
step also measures how far they are from the server's on the same tokens
(:func:`logprob_drift`, the ``drift/logprob_*`` keys; tokens the trainer filled in are left
out). It costs nothing extra: the forward pass runs anyway.
"""

from __future__ import annotations

import time
from typing import Any

__all__ = [
    "DRIFT_TOKENS",
    "MISSING_LOGPROBS_KEY",
    "OLD_LOGPROB_S",
    "REF_S",
    "data_parallel_size",
    "logprob_drift",
    "prepare_batch",
    "update_actor",
]

OLD_LOGPROB_S = "verl/old_logprob_s"
"""Seconds of the trainer's old-logprob forward passes in :func:`prepare_batch` (``recompute``
mode, or tokens whose rollout logprob is unknown; 0.0 in ``bypass`` mode without them)."""

REF_S = "verl/ref_s"
"""Seconds of the reference policy's forward pass (0.0 without ``[train] kl_coef``)."""

DRIFT_TOKENS = "drift/logprob_tokens"
"""Tokens compared by :func:`logprob_drift` (with ``drift/logprob_abs_diff_mean``,
``drift/logprob_abs_diff_max`` and ``drift/logprob_k3``: the metrics schema's rollout-vs-trainer
keys)."""


def logprob_drift(trained: Any, rollout: Any, mask: Any) -> dict[str, float]:
    """Rollout vs trainer logprobs of the same tokens (tensors of one shape; ``mask`` 1 on the
    tokens compared): count, mean and max of ``|d|`` and the mean of ``exp(d) - d - 1`` (k3,
    as verl's ``rollout_corr`` ``k3_kl``), ``d = trained - rollout``."""
    import torch

    m = mask.to(torch.float32)
    n = float(m.sum())
    if n == 0:
        return {DRIFT_TOKENS: 0.0}
    d = (trained.to(torch.float32) - rollout.to(torch.float32)) * m
    return {
        DRIFT_TOKENS: n,
        "drift/logprob_abs_diff_mean": float(d.abs().sum()) / n,
        "drift/logprob_abs_diff_max": float(d.abs().max()),
        "drift/logprob_k3": float(((torch.exp(d) - d - 1.0) * m).sum()) / n,
    }

MISSING_LOGPROBS_KEY = "fulmen_missing_logprobs"
"""Optional ``DataProto`` tensor (rows x response tokens, 1 where the rollout logprob is
unknown: ``TrainingRow.missing_logprobs``). :func:`prepare_batch` recomputes those tokens'
old logprobs with the trainer instead of trusting the 0.0 placeholder, then removes it."""


def data_parallel_size(trainer: Any) -> int:
    """Data-parallel ranks of the actor (the batch must split evenly over them)."""
    return int(trainer._get_dp_size(trainer.actor_rollout_wg, "actor"))


def prepare_batch(trainer: Any, batch: Any, metrics: dict[str, float]) -> Any:
    """Balance ``batch`` over DP ranks and add ``old_log_probs`` (and IS weights, reference
    logprobs) as verl's ``fit`` does. ``metrics`` receives verl's metrics and the seconds of
    the forward passes (:data:`OLD_LOGPROB_S`, :data:`REF_S`). Returns the batch."""
    cfg = trainer.config
    metrics[OLD_LOGPROB_S] = metrics[REF_S] = 0.0
    if cfg.trainer.balance_batch:
        trainer._balance_batch(batch, metrics=metrics)
    missing = batch.batch.pop(MISSING_LOGPROBS_KEY, None)
    recorded = batch.batch["rollout_log_probs"]
    compared = batch.batch["response_mask"]  # drift: the server's logprobs only
    if missing is not None and bool(missing.any()):
        # unknown rollout logprobs (0.0 placeholders): the trainer's own, so the ratio of those
        # tokens starts at 1 (as verl's recompute mode would have it), never at pi / 1
        compared = compared * (missing == 0)
        started = time.perf_counter()
        old, _mfu = trainer._compute_old_log_prob(batch)
        metrics[OLD_LOGPROB_S] += time.perf_counter() - started
        metrics.update(logprob_drift(old.batch["old_log_probs"], recorded, compared))
        batch.batch["rollout_log_probs"] = recorded.where(missing == 0, old.batch["old_log_probs"])
        metrics["verl/recomputed_old_logprob_tokens"] = float(missing.sum())
    rollout_corr = cfg.algorithm.get("rollout_correction", None)
    if rollout_corr is not None and rollout_corr.get("bypass_mode", False):
        from verl.trainer.ppo.rollout_corr_helper import apply_bypass_mode

        apply_bypass_mode(
            batch=batch,
            rollout_corr_config=rollout_corr,
            policy_loss_config=cfg.actor_rollout_ref.actor.policy_loss,
        )
    else:
        started = time.perf_counter()
        old, _mfu = trainer._compute_old_log_prob(batch)
        metrics[OLD_LOGPROB_S] += time.perf_counter() - started
        metrics.update(logprob_drift(old.batch["old_log_probs"], recorded, compared))
        old.batch.pop("entropys")
        batch = batch.union(old)
        if rollout_corr is not None:
            from verl.trainer.ppo.rollout_corr_helper import (
                compute_rollout_correction_and_add_to_batch,
            )

            batch, is_metrics = compute_rollout_correction_and_add_to_batch(batch, rollout_corr)
            metrics.update(is_metrics)
    if trainer.use_reference_policy:
        started = time.perf_counter()
        batch = batch.union(trainer._compute_ref_log_prob(batch))
        metrics[REF_S] = time.perf_counter() - started
    return batch


def update_actor(trainer: Any, batch: Any, *, num_mini_batches: int) -> dict[str, float]:
    """Run verl's actor update on the whole ``batch`` in ``num_mini_batches`` optimizer steps.

    Mirrors ``RayPPOTrainer._update_actor`` except for the mini-batch size: verl derives it
    from ``ppo_mini_batch_size x rollout.n`` (fixed-size prompt batches); fulmen's row count
    varies per step, so the mini-batch is ``len(batch) / num_mini_batches`` (the batch was
    padded to a multiple of ``dp_size x num_mini_batches`` by
    :func:`fulmen_verl.dataproto.rows_to_dataproto`).

    Raises:
        ValueError: the batch does not split evenly.
    """
    from verl.utils import tensordict_utils as tu
    from verl.utils.metric import reduce_metrics
    from verl.utils.py_functional import rename_dict
    from verl.workers.utils.padding import left_right_2_no_padding

    size = len(batch)
    if size % num_mini_batches:
        raise ValueError(
            f"update_actor: {size} rows do not split into {num_mini_batches} mini-batches"
        )
    cfg = trainer.config.actor_rollout_ref
    batch.meta_info["multi_turn"] = cfg.rollout.multi_turn.enable
    batch.meta_info["temperature"] = cfg.rollout.temperature
    td = left_right_2_no_padding(batch.to_tensordict())
    mini = size // num_mini_batches
    tu.assign_non_tensor(
        td,
        calculate_entropy=bool(cfg.actor.calculate_entropy or cfg.actor.entropy_coeff != 0.0),
        distillation_use_topk=False,
        distillation_only=False,
        global_batch_size=mini,
        mini_batch_size=mini,
        epochs=cfg.actor.ppo_epochs,
        seed=cfg.actor.data_loader_seed,
        dataloader_kwargs={"shuffle": cfg.actor.shuffle},
        compute_loss=True,
    )
    output = trainer.actor_rollout_wg.update_actor(td)
    metrics = rename_dict(tu.get(output, "metrics"), "actor/")
    reduced: dict[str, Any] = reduce_metrics(metrics)
    return {k: float(v) for k, v in reduced.items() if isinstance(v, int | float)}
