"""What a training backend implements: the :class:`Policy` the step driver trains.

The step driver (:mod:`fulmen.train.driver`) does everything every backend shares (tasks,
episodes, records, credit, batches, metrics, checkpoint bookkeeping, alarms, evaluation). A
backend contributes one object: the policy being trained, served where the gateway can reach
it. ``fulmen-testkit``'s :class:`~fulmen_testkit.BackendConformanceTests` checks the contract
below against a running implementation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from fulmen.rows import TrainingRow

__all__ = ["Policy"]


@runtime_checkable
class Policy(Protocol):
    """A policy being trained, and the server that serves its current version.

    Lifecycle: the backend builds it (weights loaded, server started and answering); the driver
    calls :meth:`load` once when it resumes, then :meth:`update` and :meth:`publish` once per
    step and :meth:`save` at checkpoints; whoever built it calls :meth:`close`. Not
    thread-safe: one driver owns it.
    """

    @property
    def upstream_url(self) -> str:
        """Base URL of the server of the current version (``http://host:port``; the gateway
        sends ``{upstream_url}/v1/chat/completions`` and ``/v1/completions`` there). It speaks
        vLLM's wire format, including ``return_token_ids`` and ``logprobs``."""
        ...

    @property
    def version(self) -> int:
        """The version being served: the last :meth:`publish` (0 before any)."""
        ...

    def update(self, rows: Sequence[TrainingRow]) -> Mapping[str, float]:
        """Train on ``rows`` (one step; at least one row has a trained token) and return the
        update's metrics under the keys of :mod:`fulmen.train.schema` (every key of
        :data:`~fulmen.train.schema.UPDATE_REQUIRED`; backend-specific ones namespaced). The
        served version is unchanged until :meth:`publish`."""
        ...

    def publish(self, version: int) -> None:
        """Serve the current weights as ``version`` (hot swap: requests in flight finish on the
        old weights; every request that starts after this returns uses the new ones)."""
        ...

    def save(self, directory: Path) -> None:
        """Write everything needed to continue training into ``directory`` (an existing, empty
        directory): weights, optimizer state, random state. What the checkpoint directory holds
        is the backend's to say (the embedded backend's loads with ``from_pretrained``)."""
        ...

    def load(self, directory: Path) -> None:
        """Restore what :meth:`save` wrote into ``directory``, so that the next :meth:`update`
        continues exactly as it would have after the save. Not served until :meth:`publish`.

        Raises:
            fulmen.errors.ConfigError: the checkpoint does not fit this policy's settings.
        """
        ...

    def close(self) -> None:
        """Stop serving and release what the policy holds. Idempotent."""
        ...
