"""Deterministic task sampling with a resumable position."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fulmen.protocol import Task

__all__ = ["TaskSampler"]


@dataclass
class TaskSampler:
    """Walks a seeded permutation of the tasks, reshuffling at each epoch.

    The state is two integers (``epoch``, ``position``): a checkpoint saves :meth:`state`, so a
    resumed run sees exactly the tasks the uninterrupted run would have. The order depends only
    on ``seed`` and the tasks (not on Python's hash salt or any global random state).

    Raises:
        ValueError: ``tasks`` is empty.
    """

    tasks: Sequence[Task]
    seed: int
    epoch: int = 0
    position: int = 0

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ValueError("TaskSampler: no tasks to sample from")

    def _order(self, epoch: int) -> list[int]:
        order = list(range(len(self.tasks)))
        random.Random(f"{self.seed}:{epoch}").shuffle(order)
        return order

    def next(self, n: int) -> list[Task]:
        """The next ``n`` tasks (distinct as long as ``n`` <= the dataset size)."""
        out: list[Task] = []
        while len(out) < n:
            order = self._order(self.epoch)
            take = order[self.position : self.position + n - len(out)]
            out.extend(self.tasks[i] for i in take)
            self.position += len(take)
            if self.position >= len(order):
                self.epoch += 1
                self.position = 0
        return out

    def skip(self, n: int) -> None:
        """Move on as :meth:`next` ``(n)`` would, without building the tasks (a resumed run
        that knows how many tasks it consumed but saved no :meth:`state`).

        Raises:
            ValueError: ``n`` is negative.
        """
        if n < 0:
            raise ValueError(f"TaskSampler.skip: n must be >= 0, got {n}")
        consumed = self.position + n
        self.epoch += consumed // len(self.tasks)
        self.position = consumed % len(self.tasks)

    def state(self) -> dict[str, int]:
        """The position, as JSON-serialisable data."""
        return {"epoch": self.epoch, "position": self.position}

    def load_state(self, state: Mapping[str, object]) -> None:
        """Restore a position from :meth:`state`.

        Raises:
            ValueError: ``state`` is not what :meth:`state` returns.
        """
        epoch, position = state.get("epoch"), state.get("position")
        if not isinstance(epoch, int) or not isinstance(position, int) or position < 0 or epoch < 0:
            raise ValueError(f"TaskSampler.load_state: expected {{'epoch': int, 'position': int}}, got {dict(state)!r}")
        self.epoch, self.position = epoch, position
