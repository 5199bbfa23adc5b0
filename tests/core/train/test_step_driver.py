"""The step driver end to end on a fake policy served by the vLLM test double: the rows it
writes follow the metrics schema, every step publishes the next version before the next
episodes run, evaluation follows its cadence, checkpoints carry the sampler, a resumed run
continues with the tasks and weights the uninterrupted one would have had, and a policy whose
update breaks the schema stops the run with a message naming the key."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from fulmen.config import ConfigError, TrainConfig, parse_config
from fulmen.errors import BackendError
from fulmen.gateway import Gateway
from fulmen.loading import load_tasks
from fulmen.protocol import Task
from fulmen.rows import TrainingRow
from fulmen.runner import EpisodeResult, Runner
from fulmen.store import open_store
from fulmen.train import Policy, StepDriver, TaskSampler, latest_checkpoint, make_runner
from fulmen.train.checkpoints import STATE_FILE
from fulmen.train.schema import ROLLOUT_KEYS, TRAIN_KEYS, UPDATE_KEYS
from fulmen_testkit.vllm_double import VllmDouble

HERE = Path(__file__).parent


class FakePolicy:
    """A policy whose "weights" are its number of updates, served by the vLLM test double."""

    def __init__(self, extra: Mapping[str, float] | None = None) -> None:
        self.double = VllmDouble(model="tiny", policy_version=0)
        self.double.start_in_thread()
        self.extra = dict(extra or {})
        self.updates = 0
        self.published: list[int] = []
        self.loaded: list[Path] = []

    @property
    def upstream_url(self) -> str:
        return self.double.url

    @property
    def version(self) -> int:
        return self.double.policy_version or 0

    def update(self, rows: Sequence[TrainingRow]) -> Mapping[str, float]:
        self.updates += 1
        tokens = sum(r.num_trained_tokens for r in rows)
        return {"loss": 0.5, "grad_norm": 1.0, "num_tokens": float(tokens),
                "fake/updates": float(self.updates), **self.extra}

    def publish(self, version: int) -> None:
        self.double.policy_version = version
        self.published.append(version)

    def save(self, directory: Path) -> None:
        (directory / "fake.json").write_text(json.dumps({"updates": self.updates}))

    def load(self, directory: Path) -> None:
        self.updates = json.loads((directory / "fake.json").read_text())["updates"]
        self.loaded.append(directory)

    def close(self) -> None:
        self.double.stop_thread()


def _config(out: Path, *, steps: int) -> TrainConfig:
    return parse_config(
        {
            "run": {"output_dir": str(out), "seed": 0},
            "agent": {"entry": "_driver_agent:solve", "reward": "_driver_agent:reward",
                      "concurrency": 8, "max_attempts": 1, "timeout_s": 30},
            "data": {"train": "_driver_agent:train_tasks", "eval": "_driver_agent:eval_tasks"},
            "model": {"path": "unused"},
            "train": {"steps": steps, "tasks_per_step": 2, "group_size": 4, "eval_every": 2},
            "credit": {"assigner": "grpo"},
        },
        base_dir=str(HERE),
    )


def _run(config: TrainConfig, policy: Policy, *, resume: bool = False) -> list[str]:
    log: list[str] = []
    driver = StepDriver(config, log=log.append)
    driver.prepare(resume=resume)
    asyncio.run(driver.run(policy))
    return log


def _rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _expected_tasks(config: TrainConfig, steps: int) -> list[list[str]]:
    sampler = TaskSampler(load_tasks(config.data.train, split="train", base_dir=config.base_dir), seed=0)
    return [sorted(t.id for t in sampler.next(2)) for _ in range(steps)]


def _step_tasks(out: Path) -> dict[int, list[str]]:
    store = open_store(out / "episodes.db")
    try:
        groups = {e.group_id for e in store.list_episodes() if e.group_id}
    finally:
        store.close()
    by_step: dict[int, list[str]] = {}
    for group in groups:
        prefix, task = group.split(":", 1)
        by_step.setdefault(int(prefix.removeprefix("step")), []).append(task)
    return {k: sorted(v) for k, v in by_step.items()}


@pytest.fixture
def policy() -> Iterator[FakePolicy]:
    made = FakePolicy()
    try:
        yield made
    finally:
        made.close()


def test_a_run_writes_the_schema_publishes_every_step_and_checkpoints(tmp_path: Path, policy: FakePolicy) -> None:
    config = _config(tmp_path / "run", steps=3)
    log = _run(config, policy)
    rows = _rows(tmp_path / "run")
    assert [(r["kind"], r["step"]) for r in rows] == [
        ("eval", 0), ("train", 1), ("eval", 2), ("train", 2), ("eval", 3), ("train", 3)
    ]
    train = [r for r in rows if r["kind"] == "train"]
    for row in train:
        assert set(ROLLOUT_KEYS) <= set(row)
        stray = {k for k in row if "/" not in k and k not in {*TRAIN_KEYS, *UPDATE_KEYS, "kind", "step"}}
        assert not stray
        assert row["batch/episodes"] == row["episodes"] == 8
    assert [r.get("eval_success_rate") is not None for r in train] == [False, True, True]
    # the failing task is counted, never trained: once per time it was sampled
    sampled = _expected_tasks(config, 3)
    assert [r["failed_episodes"] for r in train] == [4 * ids.count("boom") for ids in sampled]
    assert [r["batch/failed_episodes"] for r in train] == [r["failed_episodes"] for r in train]
    trained = [r for r in train if r["rows"] > 0]
    assert trained and all(r["loss"] == 0.5 and r["fake/updates"] >= 1 for r in trained)
    assert policy.updates == len(trained)
    assert all(r.get("skipped_update") == 1 for r in train if r["rows"] == 0)
    # step k's episodes ran on version k - 1, published right after step k - 1's update
    assert policy.published == [1, 2, 3]
    store = open_store(tmp_path / "run" / "episodes.db")
    try:
        for episode in store.list_episodes():
            step = int(episode.group_id.split(":")[0].removeprefix("step")) if episode.group_id else None
            versions = {t.policy_version for t in store.transitions(episode.id)}
            if step is not None and episode.task.id != "boom":
                assert versions == {step - 1}
    finally:
        store.close()
    assert _step_tasks(tmp_path / "run") == {k + 1: ids for k, ids in enumerate(sampled)}
    checkpoint = latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert checkpoint is not None and checkpoint.step == 3
    assert json.loads((checkpoint.path / "fake.json").read_text()) == {"updates": policy.updates}
    assert checkpoint.state()["sampler"] == {"epoch": 1, "position": 0}
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == [
        "latest", "step-000002", "step-000003"
    ]
    assert log[0].startswith("step 0: held-out success") and log[-1].startswith("step 3/3 · reward")


def test_resume_continues_from_the_checkpoint_with_the_uninterrupted_tasks(
    tmp_path: Path, policy: FakePolicy
) -> None:
    out = tmp_path / "run"
    _run(_config(out, steps=2), policy)
    updates = policy.updates
    again = FakePolicy()
    try:
        log = _run(_config(out, steps=4), again, resume=True)
    finally:
        again.close()
    assert again.loaded == [out / "checkpoints" / "step-000002"]
    assert f"resumed from {out / 'checkpoints' / 'step-000002'} (step 2)" in log
    assert again.published == [2, 3, 4]  # the loaded weights are served before step 3 runs
    assert again.updates >= updates
    train = [r for r in _rows(out) if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    assert not [r for r in _rows(out) if r["kind"] == "eval" and r["step"] == 0][1:]  # no 2nd "before"
    expected = _expected_tasks(_config(out, steps=4), 4)
    assert _step_tasks(out) == {k + 1: ids for k, ids in enumerate(expected)}


def test_a_used_output_dir_is_refused_without_resume(tmp_path: Path, policy: FakePolicy) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"kind": "train", "step": 1}\n')
    driver = StepDriver(_config(out, steps=1), log=lambda _: None)
    with pytest.raises(ConfigError, match="already holds a run.*--resume"):
        driver.prepare()
    assert (out / "metrics.jsonl").read_text() == '{"kind": "train", "step": 1}\n'


def test_an_update_outside_the_schema_stops_the_run(tmp_path: Path) -> None:
    bad = FakePolicy(extra={"entropyy": 0.5})
    try:
        with pytest.raises(BackendError, match="'entropyy'.*not an update key"):
            _run(_config(tmp_path / "run", steps=3), bad)
    finally:
        bad.close()
    assert STATE_FILE not in {p.name for p in (tmp_path / "run").rglob("*")}  # no checkpoint


class RowsPolicy(FakePolicy):
    """The fake policy serving two adapters, keeping the rows of every update."""

    def __init__(self) -> None:
        self.double = VllmDouble(model="tiny", policy_version=0, lora_modules=("planner", "solver"))
        self.double.start_in_thread()
        self.extra = {}
        self.updates = 0
        self.published = []
        self.loaded = []
        self.rows: list[TrainingRow] = []

    def update(self, rows: Sequence[TrainingRow]) -> Mapping[str, float]:
        self.rows += rows
        return super().update(rows)


def test_with_policies_calls_are_routed_credited_per_agent_and_counted(tmp_path: Path) -> None:
    """Two ``[[policy]]`` entries (planner, solver) and one whose agent never calls: every call
    reaches its adapter, only the policies' agents make rows, each policy's calls and rows are in
    the train row, and the idle policy is warned about once per step and counted."""
    raw: dict[str, Any] = {
        "run": {"output_dir": str(tmp_path / "run"), "seed": 0},
        "agent": {"entry": "_driver_agent:solve_two", "reward": "_driver_agent:reward",
                  "concurrency": 8, "max_attempts": 1, "timeout_s": 30},
        "data": {"train": "_driver_agent:train_tasks"},
        "model": {"path": "unused", "name": "tiny"},
        "train": {"steps": 2, "tasks_per_step": 2, "group_size": 4},
        "policy": [{"name": "planner", "agents": ["planner"]},
                   {"name": "solver", "agents": ["solver"]},
                   {"name": "critic", "agents": ["critic"]}],
    }  # fmt: skip
    policy = RowsPolicy()
    try:
        log = _run(parse_config(raw, base_dir=str(HERE)), policy)
    finally:
        policy.close()
    assert {r.body["model"] for r in policy.double.received} == {"planner", "solver"}
    assert policy.rows and {r.agent for r in policy.rows} <= {"planner", "solver"}
    train = [r for r in _rows(tmp_path / "run") if r["kind"] == "train"]
    for row in train:
        ok = row["episodes"] - row["failed_episodes"]
        assert row["policy/planner/llm_calls"] == row["policy/solver/llm_calls"] == ok
        assert row["policy/critic/llm_calls"] == row["policy/critic/rows"] == 0
        assert row["policies/base_llm_calls"] == 0
        assert row["policies/without_rows"] >= 1
        assert row["rows"] == sum(row[f"policy/{p}/rows"] for p in ("planner", "solver", "critic"))
    warnings = [line for line in log if "'critic' got no training row" in line]
    assert len(warnings) == 2 and "made no recorded call" in warnings[0]


class SlowPolicy(FakePolicy):
    """Its update takes ~0.05 s and its publish (the weight sync) ~0.3 s."""

    def update(self, rows: Sequence[TrainingRow]) -> Mapping[str, float]:
        time.sleep(0.05)
        return super().update(rows)

    def publish(self, version: int) -> None:
        time.sleep(0.3)
        super().publish(version)


def test_the_update_and_the_publish_are_timed_apart(tmp_path: Path) -> None:
    """``update_s`` is the update alone and ``publish_s`` the weight sync, so that a run shows
    rollout / update / sync per step (they were one number, ``update_s``, before)."""
    policy = SlowPolicy()
    try:
        _run(_config(tmp_path / "run", steps=1), policy)
    finally:
        policy.close()
    [row] = [r for r in _rows(tmp_path / "run") if r["kind"] == "train"]
    assert 0.05 <= row["update_s"] < 0.3 <= row["publish_s"]
    assert row["train_tokens_per_s"] == pytest.approx(row["num_tokens"] / row["update_s"])


def test_a_backend_runner_factory_runs_the_episodes(tmp_path: Path, policy: FakePolicy) -> None:
    """``runner_factory`` gets the config and the started gateway (listening where the
    backend asked) and runs every episode, evaluation included."""
    calls: list[str] = []
    hosts: list[str] = []

    class CountingRunner:
        def __init__(self, inner: Runner) -> None:
            self.inner = inner

        async def arun(self, agent: Any, tasks: Sequence[Task], **kwargs: Any) -> list[EpisodeResult]:
            calls.append(str(kwargs.get("description")))
            return await self.inner.arun(agent, tasks, **kwargs)

    def factory(config: TrainConfig, gateway: Gateway) -> CountingRunner:
        hosts.append(gateway.url)
        return CountingRunner(make_runner(config, gateway))

    config = _config(tmp_path / "run", steps=2)
    driver = StepDriver(config, log=lambda _: None, runner_factory=factory, gateway_host="127.0.0.1", gateway_port=0)
    driver.prepare()
    asyncio.run(driver.run(policy))
    assert calls == ["eval", "step 1", "step 2", "eval"]  # eval_every = 2 = the last step
    assert len(hosts) == 1 and hosts[0].startswith("http://127.0.0.1:")
