"""verl's ``RayPPOTrainer`` built and started for fulmen: Ray, the actor workers, the vLLM
rollout replicas. :class:`fulmen_verl.policy.VerlPolicy` drives what this builds; the step
loop itself is core's :class:`~fulmen.train.StepDriver`.

Who runs where (one GPU node shown; see the README for several GPUs and nodes)::

    trainer process (``fulmen train``, the Ray driver)
      ├─ StepDriver: gateway + SQLite store, runner (or [verl] ray_runners), credit, rows
      ├─ VerlPolicy ──> verl RayPPOTrainer: FSDP actor workers (Ray actors, GPUs)
      └─ verl's vLLM replicas (Ray actors, same GPUs) <──HTTP── gateway
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fulmen.config import ConfigError, TrainConfig
from fulmen.loading import load_object

from fulmen_verl.config import VerlConfig
from fulmen_verl.episodes import runner_runtime_env
from fulmen_verl.preflight import cluster_short_message

__all__ = ["build_verl_trainer", "init_ray", "placeholder_dataset", "prepare_model"]

Log = Callable[[str], None]


def prepare_model(config: TrainConfig, log: Log) -> Path:
    """The base model directory, built with ``[model] build`` when it does not exist yet.

    Raises:
        ConfigError: no model there and no build function.
    """
    path = config.resolve(config.model.path)
    if (path / "config.json").exists():
        return path.resolve()
    if config.model.build is None:
        raise ConfigError(
            f"[model] path {str(path)!r} holds no model and [model] build is not set; point path "
            "at a Hugging Face model directory or name a build function"
        )
    log(f"building the base model into {path} ({config.model.build}) …")
    load_object(config.model.build, base_dir=config.base_dir)(path)
    return path.resolve()


def build_verl_trainer(cfg: Any, *, verl: VerlConfig | None = None, where: str = "[verl]") -> Any:
    """verl's ``RayPPOTrainer`` for ``cfg`` (a composed config), with workers and vLLM started.

    Uses verl's own task-runner helpers (``BaseTaskRunner``) for the worker classes and the
    resource pools, exactly as ``verl.trainer.main_ppo_v0`` does; the dataloaders verl insists
    on get :func:`placeholder_dataset` (fulmen's runner supplies the data).

    Raises:
        ConfigError: (with ``verl``) verl found fewer accelerator slots in the cluster than
            ``[verl]`` asks for (its ``ValueError`` "Total available GPUs ..."), as one line
            naming the keys (:func:`~fulmen_verl.preflight.cluster_short_message`).
    """
    from verl.trainer.main_ppo_v0 import BaseTaskRunner
    from verl.trainer.ppo.ray_trainer import RayPPOTrainer
    from verl.utils.config import omega_conf_to_dataclass

    if cfg.trainer.device == "cpu":
        from fulmen_verl.vllm_cpu import register

        register()  # verl's "vllm" rollout, syncing weights the way vLLM's CPU build allows
    helper: Any = BaseTaskRunner()
    _actor_cls, worker_group_cls = helper.add_actor_rollout_worker(cfg)
    helper.add_reward_model_resource_pool(cfg)
    pools = helper.init_resource_pool_mgr(cfg)
    model_config: Any = omega_conf_to_dataclass(cfg.actor_rollout_ref.model)
    placeholder: Any = placeholder_dataset(cfg)
    trainer: Any = RayPPOTrainer(
        config=cfg,
        tokenizer=model_config.tokenizer,
        processor=model_config.processor,
        role_worker_mapping=helper.role_worker_mapping,
        resource_pool_manager=pools,
        ray_worker_group_cls=worker_group_cls,
        train_dataset=placeholder,
        val_dataset=placeholder,
        collate_fn=_identity,
        train_sampler=None,
    )
    try:
        trainer.init_workers()
    except ValueError as exc:
        found = _VERL_SHORT_GPUS.match(str(exc))
        if verl is None or found is None:
            raise
        raise ConfigError(cluster_short_message(verl, where=where, free=float(found[1]))) from None
    return trainer


_VERL_SHORT_GPUS = re.compile(r"Total available GPUs (\d+(?:\.\d+)?) is less than total desired GPUs")
"""verl 0.9.1's ``ResourcePoolManager._check_resource_available`` message."""


def _identity(items: list[Any]) -> list[Any]:
    return items


def placeholder_dataset(cfg: Any) -> list[dict[str, int]]:
    """The dataset verl's dataloaders are built from (fulmen's runner supplies the real data).

    verl builds ``StatefulDataLoader(batch_size=data.train_batch_size, drop_last=True)`` and
    asserts it yields at least one batch (``RayPPOTrainer._create_dataloader``), so the
    placeholder holds exactly one batch: ``train_batch_size`` items (``gen_batch_size`` when
    set, as verl reads it).
    """
    data = cfg.data
    size = int(data.get("gen_batch_size", None) or data.train_batch_size)
    return [{"fulmen": i} for i in range(size)]


def init_ray(cfg: Any, verl: VerlConfig, project_dir: str) -> bool:
    """Start (or join, with ``[verl] ray_address``) the job's Ray, with verl's runtime env and,
    for ``[verl] ray_runners``, the shipped code (:func:`~fulmen_verl.episodes.
    runner_runtime_env`). A local cluster is always a new one (``address="local"``): never
    another job's cluster on the same machine. Returns whether this call initialised Ray
    (False: it already was, and nothing was done)."""
    import ray
    from omegaconf import OmegaConf
    from verl.trainer.constants_ppo import get_ppo_ray_runtime_env

    if ray.is_initialized():
        return False
    env: Any = OmegaConf.to_container(OmegaConf.create(get_ppo_ray_runtime_env(cfg)))
    env.update(runner_runtime_env(project_dir, ship_code=verl.ship_code and verl.ray_runners > 0))
    if verl.device != "cpu":
        ray.init(address=verl.ray_address or "local", runtime_env=env)
        return True
    from fulmen_verl.cpu_env import ray_runtime_env

    cpu_env = ray_runtime_env(env.get("env_vars", {}))
    if verl.ray_address is not None:  # a started cluster declares its own slots
        ray.init(address=verl.ray_address, runtime_env={**env, **cpu_env})
        return True
    # a local cluster on this machine: one accelerator slot per CPU worker (module docstring of
    # fulmen_verl.cpu_platform); verl asks for several logical CPUs per slot
    ray.init(
        address="local",
        num_gpus=verl.total_gpus,
        num_cpus=max(16, 8 * verl.total_gpus),
        runtime_env={**env, **cpu_env},
    )
    return True
