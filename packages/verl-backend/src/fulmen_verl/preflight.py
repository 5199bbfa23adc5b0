"""What verl would refuse, refused first: the whole-config checks run before verl or Ray starts.

:func:`~fulmen_verl.config.parse_verl_options` checks each ``[verl]`` key on its own (names,
types, ranges); :func:`check_job` checks the keys against each other and against the shared
sections and this machine, mirroring what verl 0.9.1 would stop on later (after a ~30 s
import, or after Ray started its workers) with an ``AssertionError`` deep in its code:

* batch sizes: a step's episodes (``[train] tasks_per_step x group_size``, verl's
  ``data.train_batch_size``) split into ``num_mini_batches`` whole mini-batches (verl:
  ``train_batch_size >= ppo_mini_batch_size``), and each mini-batch over the data-parallel
  ranks (verl's engine worker asserts ``mini_batch_size % dp_size == 0``);
* lengths: no response may fill a micro-batch's token budget (``max_tokens_per_gpu``, verl's
  ``ppo_max_token_len_per_gpu``: ``seqlen_balancing.rearrange_micro_batches`` asserts every
  row fits), ``[batch] max_len`` (vLLM's ``max_model_len``) must leave room for a prompt, fit
  that budget, and not exceed the model's ``max_position_embeddings`` (verl's vLLM server
  refuses it at start-up);
* devices: GPUs asked for (``device = "cuda"``) on a machine without CUDA, more GPUs or CPU
  workers per node than this machine has, several nodes without a Ray cluster;
* network: Ray runners that would run on other nodes while the gateway listens on loopback.

:func:`row_token_limit` is the row length the batch builder must enforce
(:func:`bounded_config` puts it into the config the step driver runs; audit bug 3: with
``[batch] max_len`` unset nothing bounded a merged episode's row, and a row longer than
``max_tokens_per_gpu`` stopped verl's update with an assertion).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import replace

from fulmen.config import BatchConfig, ConfigError, TrainConfig

from fulmen_verl.config import VerlConfig, is_loopback

__all__ = [
    "bounded_batch",
    "bounded_config",
    "check_cluster",
    "check_devices",
    "check_job",
    "cluster_short_message",
    "model_max_positions",
    "row_token_limit",
]


def row_token_limit(batch: BatchConfig, verl: VerlConfig) -> int:
    """The longest row (``prompt + response`` tokens) verl can train: ``[batch] max_len`` when
    set, else ``[verl] max_tokens_per_gpu`` (verl cannot split a row over micro-batches).
    :func:`bounded_config` puts it into the driver's config; rows beyond it are truncated
    or dropped per ``[batch] overlong`` and counted (``overlong_truncated``/``_dropped``)."""
    if batch.max_len is None:
        return verl.max_tokens_per_gpu
    return min(batch.max_len, verl.max_tokens_per_gpu)


def bounded_batch(batch: BatchConfig, verl: VerlConfig) -> BatchConfig:
    """``[batch]`` with ``max_len`` = :func:`row_token_limit` (unchanged when it already is)."""
    limit = row_token_limit(batch, verl)
    return batch if batch.max_len == limit else replace(batch, max_len=limit)


def bounded_config(config: TrainConfig, verl: VerlConfig) -> TrainConfig:
    """``config`` with ``[batch]`` bounded (:func:`bounded_batch`): the step driver's batch
    builder then truncates or drops (per ``[batch] overlong``, counted in ``batch/overlong_*``)
    every row verl could not train."""
    batch = bounded_batch(config.batch, verl)
    return config if batch is config.batch else replace(config, batch=batch)


def model_max_positions(config: TrainConfig) -> int | None:
    """``max_position_embeddings`` of the ``[model] path`` directory's ``config.json`` (of its
    ``text_config`` for multimodal models); None when the model is not built yet or the file
    does not say."""
    path = config.resolve(config.model.path) / "config.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    for table in (data, data.get("text_config") or {}):
        value = table.get("max_position_embeddings") if isinstance(table, dict) else None
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _check_batch_sizes(config: TrainConfig, verl: VerlConfig, where: str) -> None:
    t = config.train
    episodes = t.tasks_per_step * t.group_size
    sizes = f"[train] tasks_per_step x group_size = {t.tasks_per_step} x {t.group_size}"
    if episodes % verl.num_mini_batches:
        raise ConfigError(
            f"{where} num_mini_batches = {verl.num_mini_batches} does not divide a step's "
            f"{episodes} episodes ({sizes}): verl trains whole mini-batches of the same size; "
            f"set num_mini_batches to a divisor of {episodes}"
        )
    mini = episodes // verl.num_mini_batches
    if mini % verl.total_gpus:
        raise ConfigError(
            f"{where} n_gpus_per_node x nnodes = {verl.n_gpus_per_node} x {verl.nnodes} "
            f"data-parallel ranks do not split a mini-batch of {mini} episodes ({sizes} / "
            f"num_mini_batches = {verl.num_mini_batches}) evenly; make {mini} a multiple of "
            f"{verl.total_gpus} (tasks_per_step, group_size or num_mini_batches) or change the "
            "GPU count"
        )


def _check_lengths(config: TrainConfig, verl: VerlConfig, where: str) -> None:
    budget, response = verl.max_tokens_per_gpu, config.train.max_tokens
    if response >= budget:
        raise ConfigError(
            f"{where} max_tokens_per_gpu = {budget} leaves no room for a prompt next to a "
            f"response of [train] max_tokens = {response}: verl cannot split a row over "
            f"micro-batches; raise max_tokens_per_gpu above {response} or lower [train] max_tokens"
        )
    max_len = config.batch.max_len
    if max_len is None:
        return
    if max_len > budget:
        raise ConfigError(
            f"{where} max_tokens_per_gpu = {budget} is below [batch] max_len = {max_len}: rows "
            f"up to max_len tokens would not fit one micro-batch; raise max_tokens_per_gpu to "
            f"at least {max_len} or lower [batch] max_len"
        )
    if max_len <= response:
        raise ConfigError(
            f"{config.source}: [batch] max_len = {max_len} (vLLM's max_model_len under [verl]) "
            f"leaves no room for a prompt next to a response of [train] max_tokens = "
            f"{response}; raise [batch] max_len or lower [train] max_tokens"
        )
    positions = model_max_positions(config)
    if positions is not None and max_len > positions:
        raise ConfigError(
            f"{config.source}: [batch] max_len = {max_len} (vLLM's max_model_len under [verl]) "
            f"exceeds the model's max_position_embeddings = {positions} ({config.model.path}); "
            f"lower [batch] max_len to at most {positions}"
        )


def _check_network(verl: VerlConfig, where: str) -> None:
    remote = verl.ray_address is not None or verl.nnodes > 1
    if verl.ray_runners and remote and is_loopback(verl.gateway_host):
        raise ConfigError(
            f'{where} gateway_host = "{verl.gateway_host}" is reachable from this machine only, '
            "but the ray_runners actors may run on other nodes of the cluster; set "
            'gateway_host = "0.0.0.0" (and gateway_advertise to the address other nodes use, '
            "when Ray's node address is not it)"
        )


def check_devices(
    verl: VerlConfig, *, where: str, cuda_devices: Callable[[], int] | None = None
) -> None:
    """The devices ``[verl]`` asks for exist here (a Ray cluster joined with ``ray_address``
    is not checked: its GPUs may all be on other nodes, and verl checks the cluster's count).

    Args:
        verl: the section.
        where: message prefix (``"x.toml: [verl]"``).
        cuda_devices: counts this machine's CUDA devices (default: torch's count, 0 without
            CUDA; torch is imported only then).

    Raises:
        ConfigError: the key, what this machine has, and the fix.
    """
    if verl.ray_address is not None:
        return
    if verl.nnodes > 1:
        raise ConfigError(
            f"{where} nnodes = {verl.nnodes} needs a Ray cluster of {verl.nnodes} nodes, but "
            'ray_address is not set; start the cluster (ray start) and set ray_address = "auto" '
            "on its head node, or set nnodes = 1"
        )
    per_node = verl.n_gpus_per_node
    if verl.device == "cpu":
        cores = os.cpu_count() or 1
        if per_node > cores:
            raise ConfigError(
                f'{where} n_gpus_per_node = {per_node} with device = "cpu" asks for {per_node} '
                f"worker processes and this machine has {cores} CPU cores; set n_gpus_per_node "
                f"to at most {cores}"
            )
        return
    have = (cuda_devices or _cuda_devices)()
    if have == 0:
        raise ConfigError(
            f'{where} device = "cuda" asks for {per_node} GPU(s) and this machine has no CUDA '
            'GPU; set device = "cpu" to run verl on CPU, set ray_address to use a Ray cluster\'s '
            "GPUs, or train with --backend local"
        )
    if have < per_node:
        raise ConfigError(
            f"{where} n_gpus_per_node = {per_node} but this machine has {have} GPU(s); set "
            f"n_gpus_per_node to at most {have}, or set ray_address to use a Ray cluster"
        )


def check_cluster(verl: VerlConfig, *, where: str, free_gpus: Callable[[], float] | None = None) -> None:
    """The started (or joined) Ray cluster has the accelerator slots ``[verl]`` asks for
    (``n_gpus_per_node x nnodes``), checked before verl's workers start: verl's own check
    (``ResourcePoolManager._check_resource_available``) raises a bare ``ValueError`` from deep
    in its start-up.

    Args:
        verl: the section.
        where: message prefix (``"x.toml: [verl]"``).
        free_gpus: the cluster's free GPU slots (default: Ray's ``available_resources()``,
            ``GPU`` or, on Ascend, ``NPU``; Ray must be initialised).

    Raises:
        ConfigError: the keys, what the cluster has, and the fix.
    """
    free = (free_gpus or _ray_free_gpus)()
    if free < verl.total_gpus:
        raise ConfigError(cluster_short_message(verl, where=where, free=free))


def cluster_short_message(verl: VerlConfig, *, where: str, free: float) -> str:
    """The one line of :func:`check_cluster`'s error (also used when verl's own check fires)."""
    cluster = f"the Ray cluster at ray_address = {verl.ray_address!r}" if verl.ray_address else "the local Ray cluster"
    unit = "CPU worker slots" if verl.device == "cpu" else "GPUs"
    return (
        f"{where} n_gpus_per_node = {verl.n_gpus_per_node} x nnodes = {verl.nnodes} asks for "
        f"{verl.total_gpus} {unit} and {cluster} has {free:g} free; lower n_gpus_per_node or "
        "nnodes to fit, or add nodes to the cluster (ray start --address HEAD:PORT on each) "
        "and free the slots other jobs hold"
    )


def _ray_free_gpus() -> float:
    import ray

    free = ray.available_resources()
    return float(free.get("GPU", 0.0) or free.get("NPU", 0.0))


def _cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_job(
    config: TrainConfig, verl: VerlConfig, *, cuda_devices: Callable[[], int] | None = None
) -> None:
    """Everything verl would refuse in this config, before verl is imported or Ray started
    (module docstring). Cheap: reads at most the model's ``config.json`` (and imports torch
    to count GPUs, unless ``cuda_devices`` is given or no GPU is asked for here).

    Raises:
        ConfigError: one line naming the ``[verl]`` (or shared) key, the conflict and the fix.
    """
    where = f"{config.source}: [verl]"
    _check_batch_sizes(config, verl, where)
    _check_lengths(config, verl, where)
    _check_network(verl, where)
    check_devices(verl, where=where, cuda_devices=cuda_devices)
