"""Tests that run only INSIDE the verl CPU environment (``bash scripts/verl_cpu_env.sh``):
they import verl's ``RayPPOTrainer`` (which needs fastapi) and start vLLM's CPU build.
``../test_verl_cpu_env.py`` runs them there from the main test run; the main environment
does not collect them.

Starting Ray, verl's FSDP worker and vLLM costs minutes on this CPU, so the whole session
shares ONE of each (:func:`verl_session`): every policy a test makes is a
:class:`~fulmen_verl.policy.VerlPolicy` over that trainer, reset to the same initial state
through verl's own checkpoint load (weights, optimizer, scheduler, RNG) and synced into vLLM,
and served through a front of its own that its ``close`` stops.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

collect_ignore_glob = [] if importlib.util.find_spec("vllm") is not None else ["test_*.py"]

CONFIG = """
backend = "verl"
[run]
name = "verl-cpu-session"
output_dir = "{out}"
seed = 0
[agent]
entry = "_cpu_run_agent:solve"
reward = "_cpu_run_agent:reward"
concurrency = 8
max_attempts = 1
[data]
train = "_cpu_run_agent:tasks"
eval = "_cpu_run_agent:eval_tasks"
[model]
path = "{model}"
name = "policy"
[train]
steps = 2
tasks_per_step = 2
group_size = 4
learning_rate = 1e-2
max_tokens = 16
eval_every = 1
checkpoint_every = 1
[credit]
assigner = "grpo"
[verl]
device = "cpu"
dtype = "float32"
enforce_eager = true
max_tokens_per_gpu = 2048
gradient_checkpointing = false
"""
"""The session's job: a tiny model, a learning rate that moves greedy logprobs in one step
(what the conformance kit asks for), held-out evaluation after every step."""


@dataclass(frozen=True, slots=True)
class VerlSession:
    """The session's one started verl job."""

    job: Any
    """:class:`fulmen_verl.backend.PreparedJob` of :data:`CONFIG`."""
    trainer: Any
    """verl's started ``RayPPOTrainer``."""
    initial: Path
    """The actor's initial checkpoint (``VerlPolicy.save`` before any update)."""
    workdir: Path

    def policy(self) -> Any:
        """A fresh :class:`~fulmen_verl.policy.VerlPolicy` at the initial state, version 0,
        with its own front (its ``close`` stops serving, the trainer lives on)."""
        from fulmen_verl.policy import VerlPolicy

        return VerlPolicy(
            self.trainer,
            verl=self.job.verl,
            temperature=self.job.config.train.temperature,
            owns_trainer=False,
            own_front=True,
            initial=self.initial,
        )


@pytest.fixture(scope="session")
def verl_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VerlSession]:
    """Ray, verl's worker and vLLM, started once (see the module docstring)."""
    import ray
    from fulmen_local.model.build import build_tiny_model, save_model
    from fulmen_local.model.tokenizer import build_tokenizer
    from fulmen_verl.backend import prepare_job
    from fulmen_verl.policy import VerlPolicy
    from fulmen_verl.trainer import build_verl_trainer, init_ray

    root = tmp_path_factory.mktemp("verl-session")
    tokenizer = build_tokenizer()
    model = save_model(build_tiny_model(tokenizer, seed=0), tokenizer, root / "model")
    config = root / "train.toml"
    config.write_text(CONFIG.format(out=root / "run", model=model))
    job = prepare_job(config)
    init_ray(job.hydra, job.verl, str(Path(__file__).parent))
    try:
        trainer = build_verl_trainer(job.hydra)
        first = VerlPolicy(trainer, verl=job.verl, temperature=1.0, owns_trainer=False)
        initial = root / "initial"
        initial.mkdir()
        first.save(initial)
        first.close()
        yield VerlSession(job=job, trainer=trainer, initial=initial, workdir=root)
    finally:
        ray.shutdown()
