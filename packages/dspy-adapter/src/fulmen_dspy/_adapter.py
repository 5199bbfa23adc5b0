"""``DSPyAdapter``: registers fulmen's callback in DSPy's global settings."""

from __future__ import annotations

from typing import Any, ClassVar

import dspy
from fulmen.adapters import Adapter, AdapterError

from fulmen_dspy import _tqdm_lock
from fulmen_dspy._recorder import Recorder

__all__ = ["DSPyAdapter"]


class DSPyAdapter(Adapter):
    """Joins DSPy's module tree, predictors and tool results to fulmen's recorded LLM calls.

    ``DSPyAdapter().attach()`` is the one line to add, before the program runs. It appends a
    ``dspy.utils.callback.BaseCallback`` to ``dspy.settings.callbacks`` with
    ``dspy.configure`` (DSPy's public, global setting); ``detach()`` puts the previous list
    back. Each LM call is annotated when it ends with ``agent`` (``agent`` below, else the
    top-level program's class name), ``node`` (the predictor, as ``named_predictors()`` names
    it) and ``path`` (module names from the program down); each tool's result is added to the
    LM call that asked for it. See :mod:`fulmen_dspy._recorder` for the rules.

    Contract (DSPy's, which the adapter inherits):

    * DSPy lets only the thread that first called ``dspy.configure`` change global settings:
      attach and detach from that thread (usually the main one) or before DSPy is configured.
    * Code already inside a ``dspy.context(...)`` block, or a program already wrapped by
      ``dspy.streamify``, keeps the callbacks it started with: attach first.
    * A ``dspy.context(callbacks=[...])`` override replaces the global callbacks in its block.

    While attached, ``dspy.Parallel`` may run in many episodes at once: see
    :mod:`fulmen_dspy._tqdm_lock` for the DSPy race this closes.
    """

    framework: ClassVar[str] = "dspy"

    def __init__(self, *, agent: str | None = None) -> None:
        """Create an (unattached) adapter.

        Args:
            agent: the agent name every call is annotated with; None uses the class name of
                the outermost module that runs (``ReAct``, ``MyProgram``...).
        """
        super().__init__()
        self.agent = agent
        """The agent name given at construction (None: the program's class name)."""
        self._recorder: Recorder | None = None
        self._original: list[Any] = []
        self._installed: list[Any] = []

    def _attach(self) -> None:
        current: list[Any] = list(dspy.settings.get("callbacks") or [])
        if any(isinstance(callback, Recorder) for callback in current):
            raise AdapterError(
                "another DSPyAdapter is attached (its callback is in dspy.settings.callbacks); "
                "detach it before attaching a new one"
            )
        recorder = Recorder(self, agent=self.agent)
        installed = [*current, recorder]
        original = dspy.settings.get("callbacks")
        _configure(installed, "attach")
        _tqdm_lock.install()
        self._recorder = recorder
        self._original = original if isinstance(original, list) else []
        self._installed = installed

    def _detach(self) -> None:
        current = dspy.settings.get("callbacks")
        if current is self._installed:
            restored = self._original
        else:  # someone changed the list since: remove only ours
            restored = [c for c in current or [] if c is not self._recorder]
        _configure(restored, "detach")
        _tqdm_lock.uninstall()
        self._recorder = None
        self._original, self._installed = [], []


def _configure(callbacks: list[Any], what: str) -> None:
    try:
        dspy.configure(callbacks=callbacks)
    except RuntimeError as exc:
        raise AdapterError(
            f"could not {what} the DSPy adapter: {exc} Call {what}() from the thread that "
            "configures DSPy (dspy.configure), or before DSPy is configured anywhere."
        ) from exc
