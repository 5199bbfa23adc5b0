"""Makes ``dspy.Parallel`` safe to run in many episodes at once.

DSPy 3.4's ``ParallelExecutor.execute`` starts with ``tqdm.tqdm._instances.clear()`` and does
not take tqdm's lock. tqdm adds every new bar to that set (under its lock) in ``__new__`` and
removes a disabled bar from it again in ``__init__``. When two episodes run ``dspy.Parallel``
at the same moment (the runner's worker threads), one episode's ``clear()`` can land between
the other's add and remove, and the remove raises ``KeyError: <weakref ... to 'tqdm'>`` inside
the user's program: the episode fails for a reason that is neither the agent's nor fulmen's.

The add and the remove are two separate locked sections, so no lock can close that window.
While an adapter is attached, :func:`install` swaps tqdm's instance set for a
:class:`ForgivingInstanceSet`: removing a bar that a ``clear()`` already dropped is a no-op
(the clear meant to drop it anyway), and ``clear()`` takes tqdm's own re-entrant lock so it
cannot empty the set under a thread that is iterating it (``tqdm._get_free_pos``). The same
bars stay in the set; :func:`uninstall` puts a plain ``WeakSet`` with the same contents back
when the last adapter detaches.
"""

from __future__ import annotations

import threading
from typing import Any
from weakref import WeakSet

import tqdm

__all__ = ["ForgivingInstanceSet", "install", "uninstall"]

_guard = threading.Lock()
_users = 0


class ForgivingInstanceSet(WeakSet[Any]):
    """tqdm's instance set: ``remove`` of a missing bar is a no-op, ``clear()`` is locked."""

    def remove(self, item: Any) -> None:
        """Drop ``item`` if present (a concurrent ``clear()`` may have dropped it already)."""
        self.discard(item)

    def clear(self) -> None:
        """Empty the set while holding tqdm's lock (the one ``tqdm.__new__`` adds under)."""
        with tqdm.tqdm.get_lock():
            super().clear()


def install() -> None:
    """Make ``tqdm.tqdm._instances.clear()`` take tqdm's lock (counted: one per attach)."""
    global _users
    with _guard:
        _users += 1
        if _users == 1 and not isinstance(_instances(), ForgivingInstanceSet):
            with tqdm.tqdm.get_lock():
                _set_instances(ForgivingInstanceSet(_instances()))


def uninstall() -> None:
    """Undo one :func:`install`; the last one restores a plain ``WeakSet``."""
    global _users
    with _guard:
        if _users == 0:
            return
        _users -= 1
        if _users == 0 and isinstance(_instances(), ForgivingInstanceSet):
            with tqdm.tqdm.get_lock():
                _set_instances(WeakSet(_instances()))


def _instances() -> WeakSet[Any]:
    found: WeakSet[Any] = getattr(tqdm.tqdm, "_instances")  # noqa: B009 - tqdm's private set
    return found


def _set_instances(value: WeakSet[Any]) -> None:
    setattr(tqdm.tqdm, "_instances", value)  # noqa: B010 - tqdm's private set
