"""A running test stack for adapter tests: the vLLM test double, an SQLite store and a gateway,
each serving real HTTP on loopback from its own thread, plus a runner."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fulmen import Task
from fulmen.gateway import Gateway
from fulmen.runner import AgentFn, EpisodeResult, Runner
from fulmen.store import SQLiteStore, open_store

from fulmen_testkit.tasks import MODEL
from fulmen_testkit.vllm_double import VllmDouble
from fulmen_testkit.vllm_double.generation import Responder

__all__ = ["KitStack"]


class KitStack:
    """Double (:class:`~.vllm_double.VllmDouble`, standing in for vLLM) → gateway → store.

    Use as a context manager; :meth:`run` drives episodes through the real runner.
    """

    def __init__(self, directory: Path, *, responder: Responder | None = None) -> None:
        self.double = VllmDouble(model=MODEL, responder=responder)
        self.store: SQLiteStore = open_store(directory / "kit.db")
        self.gateway = Gateway(self.store, "http://127.0.0.1:9")  # upstream set in __enter__
        self._directory = directory

    def __enter__(self) -> KitStack:
        upstream = self.double.start_in_thread()
        self.gateway = Gateway(self.store, upstream)
        self.gateway.start_in_thread()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.gateway.stop_thread()
        self.double.stop_thread()
        self.store.close()

    def run(
        self, agent: AgentFn, tasks: Sequence[Task], *, concurrency: int = 16
    ) -> list[EpisodeResult]:
        """Run one episode per task (no retries) and return the results in task order."""
        runner = Runner(self.gateway, concurrency=concurrency, timeout_s=120, max_attempts=1)
        return runner.run(agent, tasks)

    def requests_of(self, episode_id: str) -> int:
        """How many generation requests of the episode reached the upstream."""
        prefix = f"{episode_id}."
        return sum(1 for r in self.double.received if r.request_id.startswith(prefix))
