"""The verl loop writes the metrics schema's names (renamed here, in fulmen-verl, never by the
readers in core) and samples tasks with core's resumable sampler."""

from __future__ import annotations

import pytest
from fulmen.protocol import Task
from fulmen.train import TaskSampler
from fulmen.train.schema import UPDATE_REQUIRED, check_update_metrics
from fulmen_verl.metrics import schema_update_metrics

VERL_UPDATE = {  # what fulmen_verl.step.update_actor returns from verl 0.9's engine workers
    "actor/pg_loss": -0.01,
    "actor/pg_clipfrac": 0.125,
    "actor/ppo_kl": 0.002,
    "actor/pg_clipfrac_lower": 0.0,
    "actor/entropy_loss": 1.5,
    "actor/kl_loss": 0.03,
    "actor/kl_coef": 0.001,
    "actor/loss": -0.02,
    "actor/grad_norm": 0.7,
    "actor/lr": 1e-6,
    "actor/perf/max_memory_allocated_gb": 12.0,
}


def test_verl_update_metrics_get_the_schema_names() -> None:
    row = schema_update_metrics({**VERL_UPDATE, "mfu": 0.3}, trained_tokens=640)
    assert {k: row[k] for k in ("loss", "grad_norm", "num_tokens", "pg_loss", "kl")} == {
        "loss": -0.02, "grad_norm": 0.7, "num_tokens": 640.0, "pg_loss": -0.01, "kl": 0.03,
    }
    assert (row["clip_fraction"], row["approx_kl_old"], row["entropy"], row["lr"]) == (
        0.125, 0.002, 1.5, 1e-6,
    )
    # what has no schema name stays namespaced; nothing is written twice
    assert row["actor/pg_clipfrac_lower"] == 0.0 and row["verl/mfu"] == 0.3
    assert not {"actor/pg_clipfrac", "actor/ppo_kl", "actor/entropy_loss", "actor/loss"} & set(row)
    assert check_update_metrics(row) == row  # a valid update row of the schema
    assert set(UPDATE_REQUIRED) <= set(row)


@pytest.mark.parametrize(("steps_done", "per_step"), [(0, 4), (3, 4), (7, 3), (5, 10)])
def test_a_resumed_sampler_continues_where_the_run_was(steps_done: int, per_step: int) -> None:
    tasks = [Task(id=f"t{i}") for i in range(10)]
    straight = TaskSampler(tasks, seed=3)
    for _ in range(steps_done):
        straight.next(per_step)
    resumed = TaskSampler(tasks, seed=3)
    resumed.skip(steps_done * per_step)
    assert resumed.state() == straight.state()
    assert resumed.next(per_step) == straight.next(per_step)
