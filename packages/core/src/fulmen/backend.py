"""The training-backend seam: what ``fulmen train`` and ``fulmen eval`` call.

Backends are found through the ``fulmen.backends`` entry-point group (``local`` is the
embedded CPU/GPU backend in ``fulmen-local``; ``verl`` the distributed one). A backend is a
class constructible without arguments that implements :class:`TrainingBackend`.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path
from typing import Protocol, runtime_checkable

from fulmen.errors import BackendError

__all__ = ["BackendNotFound", "TrainingBackend", "available_backends", "load_backend"]

GROUP = "fulmen.backends"


class BackendNotFound(BackendError, LookupError):
    """No installed backend has that name."""


@runtime_checkable
class TrainingBackend(Protocol):
    """Runs training and evaluation jobs described by a fulmen config file."""

    def train(self, config_path: Path, *, resume: bool = False) -> int:
        """Train as the config says; ``resume`` continues from the run's last checkpoint.
        Returns a process exit status."""
        ...

    def evaluate(self, config_path: Path, *, checkpoint: Path | None = None) -> int:
        """Evaluate the config's eval split (greedy) with ``checkpoint`` (None: the base
        model). Returns a process exit status."""
        ...


def available_backends() -> list[str]:
    """Names of the installed backends."""
    return sorted(ep.name for ep in entry_points(group=GROUP))


def load_backend(name: str) -> TrainingBackend:
    """Instantiate the backend registered as ``name``.

    Raises:
        BackendNotFound: not installed; the message lists what is and how to install.
    """
    for ep in entry_points(group=GROUP):
        if ep.name == name:
            backend = ep.load()()
            if not isinstance(backend, TrainingBackend):
                raise TypeError(f"backend {name!r} ({ep.value}) does not implement TrainingBackend")
            return backend
    have = ", ".join(available_backends()) or "none"
    raise BackendNotFound(
        f"no training backend named {name!r} is installed (installed: {have}). "
        f"Install fulmen-local for 'local' or fulmen-verl for 'verl'."
    )
