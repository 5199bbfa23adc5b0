"""Deterministic task sampling with a resumable position."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from fulmen.protocol import Task

__all__ = ["TaskSampler"]


@dataclass
class TaskSampler:
    """Walks a seeded permutation of the tasks, reshuffling at each epoch.

    The state is two integers (``epoch``, ``position``), saved in checkpoints so a resumed run
    sees exactly the tasks the uninterrupted run would have.
    """

    tasks: Sequence[Task]
    seed: int
    epoch: int = 0
    position: int = 0

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

    def state(self) -> dict[str, int]:
        """Serializable position."""
        return {"epoch": self.epoch, "position": self.position}

    def load_state(self, state: dict[str, int]) -> None:
        """Restore a position from :meth:`state`."""
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
