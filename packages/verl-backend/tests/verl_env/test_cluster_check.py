"""Item 3 of issue 14: a Ray cluster with fewer accelerator slots than ``[verl]
n_gpus_per_node x nnodes`` asks for is one ConfigError line naming the keys and the fix,
checked after Ray is joined and before verl starts a worker; verl's own check (a bare
``ValueError`` with a traceback from deep in ``init_workers``) is turned into the same line
when it fires first. Runs in the session's Ray, whose one slot the session's worker holds."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from fulmen.errors import ConfigError
from fulmen_verl.policy import VerlPolicy
from fulmen_verl.trainer import build_verl_trainer

pytestmark = pytest.mark.slow


def test_a_cluster_without_the_slots_asked_for_is_one_config_line(verl_session: Any) -> None:
    job = verl_session.job
    verl = replace(job.verl, ray_address="auto")  # joined: the machine's devices are not checked
    with pytest.raises(ConfigError) as refused:
        VerlPolicy.start(job.config, verl, job.hydra, log=print)
    message = str(refused.value)
    assert "\n" not in message
    assert "[verl] n_gpus_per_node = 1 x nnodes = 1 asks for 1 CPU worker slots" in message
    assert "has 0 free" in message and "lower n_gpus_per_node or nnodes" in message

    # verl's own check, should the slots go between ours and verl's: the same line
    with pytest.raises(ConfigError) as verl_refused:
        build_verl_trainer(job.hydra, verl=verl, where=f"{job.config.source}: [verl]")
    assert str(verl_refused.value) == message
