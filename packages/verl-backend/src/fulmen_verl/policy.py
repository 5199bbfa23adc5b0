""":class:`VerlPolicy`: fulmen-verl's :class:`~fulmen.train.Policy`, driven by core's
:class:`~fulmen.train.StepDriver` like every backend's.

It holds verl's started ``RayPPOTrainer`` (:mod:`fulmen_verl.trainer`) and maps the protocol
onto verl's own pieces:

* ``upstream_url``: verl's vLLM replica (``LLMServerManager.get_addresses()``), or a
  :class:`~fulmen_verl.servers.ReplicaPool` in front of several;
* ``update``: rows → ``DataProto`` (:mod:`fulmen_verl.dataproto`) → verl's DP balancing,
  old-logprob / reference passes and actor update (:mod:`fulmen_verl.step`);
* ``publish``: verl's weight sync, ``CheckpointEngineManager.update_weights(version)``;
* ``save`` / ``load``: verl's actor checkpoint (``actor_rollout_wg.save_checkpoint`` /
  ``load_checkpoint``: sharded weights, optimizer, LR scheduler and RNG state, and a Hugging
  Face config for ``python -m verl.model_merger``) in ``actor/``;
* ``close``: ``ray.shutdown()``, the actor workers and vLLM servers with it.

Serving while training: on a GPU, vLLM shares the GPU with the actor and sleeps (frees its
memory) from the start of :meth:`VerlPolicy.update` until :meth:`VerlPolicy.publish` wakes it
with the new weights, so nothing is served in between (the driver publishes right after
updating). On the CPU platform vLLM never sleeps and serves the previous version until the
publish.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fulmen.config import TrainConfig
from fulmen.drift import HFTokenView
from fulmen.errors import ConfigError
from fulmen.rows import TrainingRow

from fulmen_verl.config import VerlConfig
from fulmen_verl.dataproto import add_missing_logprobs, rows_to_dataproto
from fulmen_verl.metrics import ACTOR_UPDATE_S, SLEEP_S, schema_update_metrics
from fulmen_verl.preflight import check_cluster
from fulmen_verl.servers import ReplicaPool, replica_urls
from fulmen_verl.step import DRIFT_TOKENS, data_parallel_size, prepare_batch, update_actor

__all__ = ["ACTOR_DIR", "VerlPolicy"]

Log = Callable[[str], None]

ACTOR_DIR = "actor"
"""Where in a checkpoint directory verl's actor checkpoint lies."""

BYPASS_K3 = "actor/rollout_corr/k3_kl"
"""verl's rollout-vs-trainer k3 from the bypass loss (a mean over the update's micro-batches)."""


class VerlPolicy(HFTokenView):
    """A policy trained by verl's workers and served by verl's vLLM replicas (module
    docstring). Build it with :meth:`start`; it serves version 0 when built.

    It is also the drift checks' :class:`fulmen.drift.TokenView` over the tokenizer verl's
    actor and vLLM load (:class:`~fulmen.drift.HFTokenView`: the step driver re-renders the
    recorded chat calls and counts token anomalies).

    Args:
        trainer: verl's ``RayPPOTrainer`` with its workers started
            (:func:`fulmen_verl.trainer.build_verl_trainer`).
        verl: the ``[verl]`` settings (``num_mini_batches`` is read).
        temperature: the rollout temperature (``[train] temperature``).
        owns_trainer: :meth:`close` shuts Ray down (and with it the workers and vLLM). False:
            the trainer outlives this policy (another policy may use it next).
        own_front: serve through a :class:`~fulmen_verl.servers.ReplicaPool` of this
            policy's own even with one replica, so that :meth:`close` stops serving at
            :attr:`upstream_url` while the trainer lives on.
        initial: a checkpoint directory (:meth:`save`'s) loaded before the first sync, so the
            policy starts from its weights, optimizer and random state.
    """

    def __init__(
        self,
        trainer: Any,
        *,
        verl: VerlConfig,
        temperature: float,
        owns_trainer: bool = True,
        own_front: bool = False,
        initial: Path | None = None,
    ) -> None:
        super().__init__(trainer.tokenizer)
        self.trainer: Any = trainer
        """verl's ``RayPPOTrainer``."""
        self._num_mini_batches = verl.num_mini_batches
        self._temperature = temperature
        self._owns_trainer = owns_trainer
        tokenizer = trainer.tokenizer
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self._pad = int(pad)
        self._divisor = data_parallel_size(trainer) * verl.num_mini_batches
        urls = replica_urls(trainer.llm_server_manager.get_addresses())
        self._pool: ReplicaPool | None = None
        self._url = urls[0]
        if len(urls) > 1 or own_front:
            self._pool = ReplicaPool(urls)
            self._url = self._pool.start_in_thread()
        self._asleep = False
        self._closed = False
        self._version = 0
        if initial is not None:
            self.load(initial)
        self.publish(0)

    @classmethod
    def start(cls, config: TrainConfig, verl: VerlConfig, hydra: Any, *, log: Log) -> VerlPolicy:
        """Start Ray (:func:`~fulmen_verl.trainer.init_ray`), verl's workers and vLLM for the
        composed verl config ``hydra``, and serve the actor's initial weights as version 0.
        The policy owns Ray when this call started it (its :meth:`close` shuts Ray down).

        Raises:
            ConfigError: the Ray cluster has fewer accelerator slots than ``[verl]`` asks
                for (:func:`~fulmen_verl.preflight.check_cluster`), checked before verl starts
                a worker.
        """
        from fulmen_verl.trainer import build_verl_trainer, init_ray

        ours = init_ray(hydra, verl, config.base_dir)
        started = time.perf_counter()
        where = f"{config.source}: [verl]"
        try:
            check_cluster(verl, where=where)
            trainer = build_verl_trainer(hydra, verl=verl, where=where)
            policy = cls(trainer, verl=verl, temperature=config.train.temperature, owns_trainer=ours)
        except BaseException:
            if ours:
                _shutdown_ray()
            raise
        log(f"verl workers and vLLM up in {time.perf_counter() - started:.0f} s; serving {policy.upstream_url}")
        return policy

    @property
    def upstream_url(self) -> str:
        """vLLM's OpenAI-compatible server (or the replica pool in front of several)."""
        return self._url

    @property
    def version(self) -> int:
        """The version vLLM serves (the last :meth:`publish`)."""
        return self._version

    def _sleep(self) -> float:
        if self._asleep:
            return 0.0
        started = time.perf_counter()
        self.trainer.checkpoint_manager.sleep_replicas()
        self._asleep = True
        return time.perf_counter() - started

    def update(self, rows: Sequence[TrainingRow]) -> Mapping[str, float]:
        """One verl update on ``rows`` (the module docstring says what is served meanwhile).

        Returns the schema's update keys (verl's renamed by :func:`~fulmen_verl.metrics.
        schema_update_metrics`, ``num_rows``, ``optimizer_steps``), verl's other metrics
        namespaced, the phase timings of :data:`~fulmen_verl.metrics.STEP_TIME_KEYS`, and the
        rollout-vs-trainer ``drift/logprob_*`` keys: all four when the trainer computed old
        logprobs (:func:`~fulmen_verl.step.logprob_drift`); in ``bypass`` mode only
        ``drift/logprob_k3``, from verl's bypass loss (:data:`BYPASS_K3`), and only when the
        update is one optimizer step (later steps see moved weights).
        """
        metrics: dict[str, float] = {SLEEP_S: self._sleep()}
        data = rows_to_dataproto(
            rows, pad_token_id=self._pad, size_divisor=self._divisor, temperature=self._temperature
        )
        add_missing_logprobs(data, rows)
        data = prepare_batch(self.trainer, data, metrics)
        started = time.perf_counter()
        metrics.update(update_actor(self.trainer, data, num_mini_batches=self._num_mini_batches))
        metrics[ACTOR_UPDATE_S] = time.perf_counter() - started
        out = schema_update_metrics(metrics, trained_tokens=sum(r.num_trained_tokens for r in rows))
        out["num_rows"] = float(len(rows))
        epochs = int(self.trainer.config.actor_rollout_ref.actor.ppo_epochs)
        out["optimizer_steps"] = float(self._num_mini_batches * epochs)
        k3 = out.get(BYPASS_K3)
        if DRIFT_TOKENS not in out and k3 is not None and out["optimizer_steps"] == 1:
            # bypass mode, no trainer forward before the update: verl's bypass loss measured
            # it on the update's own forward, all with the rollout weights only in one step
            out["drift/logprob_k3"] = k3
        return out

    def publish(self, version: int) -> None:
        """Sync the actor's weights into every vLLM replica (verl's ``CheckpointEngineManager.
        update_weights``, which wakes them) and serve them as ``version``."""
        self._sleep()  # verl syncs into sleeping replicas (a no-op on the CPU platform)
        self.trainer.checkpoint_manager.update_weights(version)
        self._asleep = False
        self._version = version

    def save(self, directory: Path) -> None:
        """verl's actor checkpoint (weights, optimizer, scheduler, RNG) into
        ``directory/actor``. Every worker writes its own shard there: with workers on several
        nodes, ``directory`` must be on storage they all share."""
        self.trainer.actor_rollout_wg.save_checkpoint(
            str(directory / ACTOR_DIR), None, self._version, max_ckpt_to_keep=None
        )

    def load(self, directory: Path) -> None:
        """Load what :meth:`save` wrote (verl's ``load_checkpoint``); served after
        :meth:`publish` (on a GPU vLLM sleeps until then, as during :meth:`update`).

        Raises:
            ConfigError: ``directory`` holds no verl actor checkpoint, or verl could not load
                it into this job's actor (another model or world size).
        """
        actor = directory / ACTOR_DIR
        if not actor.is_dir():
            raise ConfigError(
                f"checkpoint {directory} holds no verl actor checkpoint ({ACTOR_DIR}/); resume "
                "a run of --backend verl, or start over without --resume"
            )
        from ray.exceptions import RayTaskError

        self._sleep()  # on a GPU: vLLM's memory free for the actor's load, as verl's fit() does
        try:
            self.trainer.actor_rollout_wg.load_checkpoint(str(actor), del_local_after_load=False)
        except RayTaskError as exc:
            cause = str(exc.cause).strip().splitlines()
            raise ConfigError(
                f"checkpoint {directory} does not fit this job's verl actor "
                f"({cause[-1] if cause else type(exc.cause).__name__}); resume with the config "
                "that wrote it, or start over without --resume"
            ) from None

    def close(self) -> None:
        """Stop serving: this policy's front, and with ``owns_trainer`` Ray (workers, vLLM).
        Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._pool is not None:
            self._pool.stop_thread()
        if self._owns_trainer:
            _shutdown_ray()


def _shutdown_ray() -> None:
    import ray

    ray.shutdown()
