"""``DSPyAdapter``: registers fulmen's callback in DSPy's global settings."""

from __future__ import annotations

from typing import Any, ClassVar

import dspy
from fulmen.adapters import DEFAULT_MODEL, Adapter, AdapterError, FrameworkRequirement
from fulmen.context import EpisodeContext

from fulmen_dspy import _tqdm_lock
from fulmen_dspy._lm import EPISODE_OWNED, episode_lm
from fulmen_dspy._recorder import Recorder
from fulmen_dspy._requirement import REQUIREMENT

__all__ = ["DSPyAdapter"]


class DSPyAdapter(Adapter):
    """Joins DSPy's module tree, predictors and tool results to fulmen's recorded LLM calls.

    ``DSPyAdapter().attach()`` is the one line to add, before the program runs, and
    :meth:`model_for` the episode's LM. Attaching appends a
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
    requirement: ClassVar[FrameworkRequirement] = REQUIREMENT

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

    @classmethod
    def model_for(cls, ctx: EpisodeContext, model: str = DEFAULT_MODEL, **kwargs: Any) -> dspy.LM:
        """A ``dspy.LM`` whose calls go to the episode ``ctx``, with the cache off.

        Use it with ``dspy.context`` around the program call; DSPy copies that setting into the
        worker threads of ``dspy.Parallel`` (and ``dspy.asyncify``), so every branch of the
        program calls the episode's route::

            with dspy.context(lm=DSPyAdapter.model_for(ctx)):
                prediction = program(question=task.data["question"])

        Args:
            ctx: the episode's context (given to the agent by fulmen's runner).
            model: the served model name (``"policy"``); ``openai/`` is prefixed when missing, so
                DSPy speaks the OpenAI chat-completions protocol the gateway serves.
            **kwargs: anything else ``dspy.LM`` takes (``temperature``, ``max_tokens``...).
                ``num_retries`` defaults to 0 (a retried call would be recorded twice; fulmen
                retries the whole episode) and ``timeout`` to
                :data:`~fulmen.adapters.MODEL_TIMEOUT_S`. ``extra_body`` works but makes DSPy
                use LiteLLM instead of its built-in client.

        Returns:
            A new ``dspy.LM`` with ``cache=False``: a cached answer never reaches the gateway,
            so it would be neither recorded nor trained on.

        Raises:
            AdapterError: ``kwargs`` sets ``cache``, ``api_base``, ``base_url`` or ``api_key``
                (they are the episode's to set).
        """
        cls._refuse_episode_settings(kwargs, EPISODE_OWNED)
        return episode_lm(ctx, model, **kwargs)

    def _attach(self) -> None:
        current: list[Any] = list(dspy.settings.get("callbacks") or [])
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
