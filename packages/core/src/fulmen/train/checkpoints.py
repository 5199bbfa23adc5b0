"""Checkpoint bookkeeping: which step, the ``latest`` pointer, the driver's own state.

Layout under ``<output_dir>/checkpoints/``::

    step-000004/            what Policy.save wrote (weights, optimizer...) + fulmen_state.json
    latest                  text file naming the newest complete checkpoint

The policy writes its own files (for the embedded backend a directory ``from_pretrained``
loads); :data:`STATE_FILE` holds the driver's part: the step and the task sampler's position.
A checkpoint is written under a temporary name and renamed when complete, and ``latest`` is
replaced atomically afterwards, so a crash mid-save leaves the previous checkpoint as
``latest``. Only the newest ``keep`` checkpoints are kept.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fulmen.errors import ConfigError

__all__ = ["STATE_FILE", "Checkpoint", "latest_checkpoint", "write_checkpoint"]

STATE_FILE = "fulmen_state.json"
"""The driver's state in a checkpoint directory; its presence marks the checkpoint complete."""

_POINTER = "latest"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A complete checkpoint on disk."""

    path: Path
    step: int
    """Training steps completed when it was written."""

    def state(self) -> dict[str, Any]:
        """The driver's state saved with it (``step``, ``sampler``...).

        Raises:
            ConfigError: the state file is unreadable (the message names it).
        """
        path = self.path / STATE_FILE
        try:
            data: Any = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"checkpoint state {path} is unreadable ({exc}); remove the checkpoint or start over") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"checkpoint state {path} is not a JSON object; remove the checkpoint or start over")
        return dict(data)


def _name(step: int) -> str:
    return f"step-{step:06d}"


def write_checkpoint(
    root: Path,
    *,
    step: int,
    save: Callable[[Path], None],
    state: Mapping[str, Any],
    keep: int = 2,
) -> Checkpoint:
    """Write the checkpoint of ``step`` completed steps and point ``latest`` at it.

    ``save(directory)`` writes the policy's files into ``directory`` (a fresh, empty one);
    ``state`` (JSON-serialisable) is saved beside them as :data:`STATE_FILE`. The newest
    ``keep`` checkpoints are kept, older ones removed.
    """
    root.mkdir(parents=True, exist_ok=True)
    final = root / _name(step)
    tmp = root / f".tmp-{_name(step)}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save(tmp)
    (tmp / STATE_FILE).write_text(json.dumps({**state, "step": step}), encoding="utf-8")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    pointer_tmp = root / f".{_POINTER}.tmp"
    pointer_tmp.write_text(final.name)
    os.replace(pointer_tmp, root / _POINTER)
    done = sorted(p for p in root.glob("step-*") if p.is_dir())
    for old in done[: max(len(done) - keep, 0)]:
        shutil.rmtree(old, ignore_errors=True)
    return Checkpoint(path=final, step=step)


def latest_checkpoint(root: Path) -> Checkpoint | None:
    """The newest complete checkpoint under ``root`` (what ``latest`` names), or None."""
    pointer = root / _POINTER
    if not pointer.is_file():
        return None
    path = root / pointer.read_text().strip()
    if not (path / STATE_FILE).is_file():
        return None
    try:
        step = int(path.name.removeprefix("step-"))
    except ValueError:
        return None
    return Checkpoint(path=path, step=step)
