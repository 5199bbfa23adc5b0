"""The resumable task sampler and the checkpoint bookkeeping (step directories, ``latest``,
the driver's state beside the policy's files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fulmen.errors import ConfigError
from fulmen.protocol import Task
from fulmen.train import TaskSampler, latest_checkpoint, write_checkpoint
from fulmen.train.checkpoints import STATE_FILE

TASKS = [Task(id=f"t{i}") for i in range(5)]


def test_every_task_once_per_epoch_then_a_new_order() -> None:
    sampler = TaskSampler(TASKS, seed=7)
    first = [t.id for t in sampler.next(3) + sampler.next(2)]
    second = [t.id for t in sampler.next(5)]
    assert sorted(first) == sorted(second) == [t.id for t in TASKS]
    assert first != second
    assert [t.id for t in TaskSampler(TASKS, seed=7).next(5)] == first  # the seed decides


def test_state_and_skip_resume_the_same_sequence() -> None:
    straight = TaskSampler(TASKS, seed=1)
    straight.next(7)
    saved = straight.state()
    restored = TaskSampler(TASKS, seed=1)
    restored.load_state(json.loads(json.dumps(saved)))
    skipped = TaskSampler(TASKS, seed=1)
    skipped.skip(7)
    assert saved == skipped.state() == {"epoch": 1, "position": 2}
    expected = straight.next(6)
    assert restored.next(6) == expected and skipped.next(6) == expected


def test_bad_sampler_input() -> None:
    with pytest.raises(ValueError, match="no tasks"):
        TaskSampler([], seed=0)
    with pytest.raises(ValueError, match="epoch"):
        TaskSampler(TASKS, seed=0).load_state({"epoch": "1"})
    with pytest.raises(ValueError, match=">= 0"):
        TaskSampler(TASKS, seed=0).skip(-1)


def _save(directory: Path) -> None:
    (directory / "weights.bin").write_bytes(b"w")


def test_checkpoints_point_latest_at_the_newest_and_keep_two(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    assert latest_checkpoint(root) is None
    for step in (1, 2, 3):
        made = write_checkpoint(root, step=step, save=_save, state={"sampler": {"epoch": 0, "position": step}})
    latest = latest_checkpoint(root)
    assert latest == made and latest is not None and latest.step == 3
    assert latest.state() == {"sampler": {"epoch": 0, "position": 3}, "step": 3}
    assert (latest.path / "weights.bin").read_bytes() == b"w"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-000002", "step-000003"]


def test_an_incomplete_checkpoint_is_not_latest(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    write_checkpoint(root, step=1, save=_save, state={})

    def crash(directory: Path) -> None:
        raise KeyboardInterrupt  # killed mid-save

    with pytest.raises(KeyboardInterrupt):
        write_checkpoint(root, step=2, save=crash, state={})
    latest = latest_checkpoint(root)
    assert latest is not None and latest.step == 1
    (latest.path / STATE_FILE).write_text("{torn")
    with pytest.raises(ConfigError, match="unreadable"):
        latest.state()
    (latest.path / STATE_FILE).unlink()
    assert latest_checkpoint(root) is None
