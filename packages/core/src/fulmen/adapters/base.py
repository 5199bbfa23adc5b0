"""The :class:`Adapter` base class: attach/detach life cycle, failure isolation, and the join
from a framework's view of an LLM call to the gateway's recorded transition.

Contract for every adapter:

* ``attach()`` is the one line a user adds. It is idempotent (a second call does nothing) and
  returns the adapter; ``detach()`` restores the framework exactly as it was (also idempotent).
  Both are thread-safe. An adapter is also a context manager (attach on enter, detach on exit).
* Exclusive attach: one adapter sees every call of its framework in the process, so at most one
  instance per :attr:`Adapter.framework` is attached at a time. Attaching a second one raises
  :class:`AdapterError` and changes nothing; once the first is detached, another may attach.
* ``model_for(ctx, model="policy", **kwargs)`` returns the framework's own model object pointed
  at the episode (``ctx.base_url``, ``ctx.api_key``), with training-safe defaults: no client
  retries (a retried call would be recorded twice; the runner retries whole episodes) and a
  timeout of :data:`MODEL_TIMEOUT_S`, both overridable; settings that belong to the episode
  (its URL and key) are refused.
* Install hint: an adapter package checks its framework with :meth:`FrameworkRequirement.check`
  before importing it, so a missing framework is one ``ImportError`` with the exact
  ``pip install`` / ``uv add`` line (the adapter class names it in :attr:`Adapter.requirement`).
* Adapter code never breaks the user's agent: every hook body runs under :meth:`Adapter.guard`,
  which logs the failure on the ``fulmen.adapters.<framework>`` logger and lets the run go on.
  Exceptions raised by the user's own code (a tool error, a framework exception) are never
  caught or changed by an adapter.
* Structure goes through :meth:`Adapter.annotate`, keyed by the response id the framework saw
  (``chatcmpl-{episode}.{seq}``, set by the gateway). A response id that is not a fulmen one
  (the call did not go through a gateway) is skipped with a debug log, never guessed.
"""

from __future__ import annotations

import importlib
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Collection, Generator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Self

from fulmen.context import EpisodeContext, NoEpisodeError, current_episode, find_episode
from fulmen.errors import AdapterError, MissingDependencyError
from fulmen.protocol import request_id_of

__all__ = [
    "DEFAULT_MODEL",
    "MODEL_TIMEOUT_S",
    "Adapter",
    "AdapterError",
    "CallInfo",
    "FrameworkRequirement",
    "episode_for_response",
]

DEFAULT_MODEL: Final = "policy"
"""The model name ``fulmen train`` serves: ``model_for``'s default."""
MODEL_TIMEOUT_S: Final = 120.0
"""Seconds a ``model_for`` model waits for one LLM call before it fails, unless told otherwise."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FrameworkRequirement:
    """What an adapter package needs installed, and the line that installs it.

    An adapter package calls :meth:`check` in its ``__init__`` before importing anything of
    the framework, and its adapter class names the same object in :attr:`Adapter.requirement`.
    """

    package: str
    """The adapter's distribution, which pulls the framework in (``fulmen-langchain``)."""
    modules: tuple[str, ...]
    """Modules the adapter imports from the framework (``langchain_core``...)."""

    @property
    def install_line(self) -> str:
        """``pip install <package> (or: uv add <package>)``."""
        return f"pip install {self.package} (or: uv add {self.package})"

    def check(self) -> None:
        """Import every module in :attr:`modules`.

        Raises:
            MissingDependencyError: one cannot be imported (an :class:`ImportError`); the
                message names the adapter, the module and :attr:`install_line`.
        """
        for module in self.modules:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise MissingDependencyError(
                    feature=self.package.replace("-", "_"),
                    package=module,
                    install=self.install_line,
                ) from exc


_holders: dict[str, Adapter] = {}
"""The attached adapter of each framework in this process (see "Exclusive attach")."""
_holders_lock = threading.Lock()


@dataclass(frozen=True, slots=True, kw_only=True)
class CallInfo:
    """What an adapter knows about one LLM call, ready to become an annotation."""

    response_id: str
    """The response id the framework saw (``chatcmpl-{episode}.{seq}``)."""
    agent: str | None = None
    """Agent / role name."""
    node: str | None = None
    """Graph node, span or module name."""
    path: tuple[str, ...] = ()
    """Enclosing runs, outermost first."""
    tool_results: tuple[Mapping[str, Any], ...] = ()
    """``{tool_call_id, name, output}`` / ``{..., error}`` for tools this call asked for."""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    """Anything else (run ids, handoffs...)."""


def episode_for_response(response_id: str) -> tuple[EpisodeContext, str] | None:
    """The episode context and request id of a fulmen response id, or None when the id is not
    a fulmen one or its episode is not known in this process (nor via ``FULMEN_EPISODE_URL``).

    The episode is taken from the id itself (``{episode}.{seq}``), so a call is never attributed
    to another episode than the one the gateway recorded it under.
    """
    request_id = request_id_of(response_id)
    episode_id, dot, seq = request_id.rpartition(".")
    if not dot or not episode_id or not seq.isdigit():
        return None
    ctx = find_episode(episode_id)
    if ctx is None:
        try:
            candidate = current_episode()
        except NoEpisodeError:
            return None
        if candidate.episode_id != episode_id:
            return None
        ctx = candidate
    return ctx, request_id


class Adapter(ABC):
    """Base of every framework adapter. See the module docstring for the contract.

    Subclasses set :attr:`framework` and :attr:`requirement`, implement :meth:`_attach` /
    :meth:`_detach` using only the framework's public hooks, and :meth:`model_for`.
    """

    framework: ClassVar[str]
    """Entry-point name and the ``framework`` of its annotations (``langchain``...)."""
    requirement: ClassVar[FrameworkRequirement]
    """What the adapter's package needs installed (checked when the package is imported)."""

    def __init__(self) -> None:
        self._attached = False
        self._state_lock = threading.RLock()
        self.failures = 0
        """How many hook bodies failed (each was logged and skipped)."""
        self.log = logging.getLogger(f"fulmen.adapters.{self.framework}")
        """The adapter's logger."""

    @property
    def attached(self) -> bool:
        """True between :meth:`attach` and :meth:`detach`."""
        return self._attached

    def attach(self) -> Self:
        """Hook the framework (idempotent). Returns ``self`` for one-line use.

        Raises:
            AdapterError: another adapter of the same :attr:`framework` is attached in this
                process (nothing is changed; detach that one first, or keep using it).
        """
        with self._state_lock:
            if self._attached:
                return self
            self._claim()
            try:
                self._attach()
            except BaseException:
                self._release()
                raise
            self._attached = True
        return self

    def detach(self) -> None:
        """Unhook the framework, restoring it as it was (idempotent)."""
        with self._state_lock:
            if self._attached:
                self._detach()
                self._attached = False
                self._release()

    def _claim(self) -> None:
        with _holders_lock:
            holder = _holders.get(self.framework)
            if holder is not None and holder is not self:
                raise AdapterError(
                    f"another {type(holder).__name__} is attached in this process; one adapter "
                    f"sees every {self.framework} call, so keep using that one or detach it "
                    "before attaching this one"
                )
            _holders[self.framework] = self

    def _release(self) -> None:
        with _holders_lock:
            if _holders.get(self.framework) is self:
                del _holders[self.framework]

    def __enter__(self) -> Self:
        return self.attach()

    def __exit__(self, *exc_info: object) -> None:
        self.detach()

    @abstractmethod
    def _attach(self) -> None:
        """Install the hooks (called once per attach, under the state lock)."""

    @abstractmethod
    def _detach(self) -> None:
        """Remove the hooks installed by :meth:`_attach`."""

    @classmethod
    @abstractmethod
    def model_for(cls, ctx: EpisodeContext, model: str = DEFAULT_MODEL, **kwargs: Any) -> object:
        """The framework's model object, pointed at the episode ``ctx``.

        Contract: its LLM calls go to ``ctx.base_url`` with ``ctx.api_key`` and ask for
        ``model``; client retries are off and a timeout of :data:`MODEL_TIMEOUT_S` is set
        unless ``kwargs`` say otherwise; other ``kwargs`` go to the framework's constructor.
        Needs no attached adapter; a new object per call (one per episode).

        Raises:
            AdapterError: ``kwargs`` set something the episode owns (see
                :meth:`_refuse_episode_settings`).
        """

    @classmethod
    def _refuse_episode_settings(cls, kwargs: Mapping[str, object], owned: Collection[str]) -> None:
        """Raise :class:`AdapterError` naming every key of ``kwargs`` in ``owned`` (settings
        :meth:`model_for` takes from the episode, such as its URL and key)."""
        clashes = sorted(key for key in owned if key in kwargs)
        if clashes:
            raise AdapterError(
                f"{cls.__name__}.model_for() sets {', '.join(clashes)} itself (the episode's "
                "route and key, and what the gateway records); remove "
                f"{'it' if len(clashes) == 1 else 'them'} from the call"
            )

    @contextmanager
    def guard(self, what: str) -> Generator[None]:
        """Run adapter code so that a failure is logged and counted, never raised."""
        try:
            yield
        except Exception:
            self.failures += 1
            self.log.exception(
                "fulmen %s adapter failed in %s; the agent run goes on", self.framework, what
            )

    def annotate(self, call: CallInfo) -> bool:
        """Send ``call``'s structure to its episode. Returns False (and logs at debug) when the
        response is not a fulmen one. Failures to record propagate: call it under :meth:`guard`.
        """
        found = episode_for_response(call.response_id)
        if found is None:
            self.log.debug(
                "response %r is not from a fulmen episode; not annotated", call.response_id
            )
            return False
        ctx, request_id = found
        ctx.annotate(
            request_id,
            framework=self.framework,
            agent=call.agent,
            node=call.node,
            path=call.path,
            tool_results=call.tool_results,
            metadata=call.metadata,
        )
        return True
