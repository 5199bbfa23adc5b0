"""The :class:`Adapter` base class: attach/detach life cycle, failure isolation, and the join
from a framework's view of an LLM call to the gateway's recorded transition.

Contract for every adapter:

* ``attach()`` is the one line a user adds. It is idempotent (a second call does nothing) and
  returns the adapter; ``detach()`` restores the framework exactly as it was (also idempotent).
  Both are thread-safe. An adapter is also a context manager (attach on enter, detach on exit).
* Adapter code never breaks the user's agent: every hook body runs under :meth:`Adapter.guard`,
  which logs the failure on the ``fulmen.adapters.<framework>`` logger and lets the run go on.
  Exceptions raised by the user's own code (a tool error, a framework exception) are never
  caught or changed by an adapter.
* Structure goes through :meth:`Adapter.annotate`, keyed by the response id the framework saw
  (``chatcmpl-{episode}.{seq}``, set by the gateway). A response id that is not a fulmen one
  (the call did not go through a gateway) is skipped with a debug log, never guessed.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Generator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from fulmen.context import EpisodeContext, NoEpisodeError, current_episode, find_episode
from fulmen.protocol import request_id_of

__all__ = ["Adapter", "AdapterError", "CallInfo", "episode_for_response"]


class AdapterError(RuntimeError):
    """Misuse of an adapter (e.g. attaching one while another instance is attached)."""


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

    Subclasses set :attr:`framework` and implement :meth:`_attach` / :meth:`_detach` using only
    the framework's public hooks.
    """

    framework: ClassVar[str]
    """Entry-point name and the ``framework`` of its annotations (``langchain``...)."""

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
        """Hook the framework (idempotent). Returns ``self`` for one-line use."""
        with self._state_lock:
            if not self._attached:
                self._attach()
                self._attached = True
        return self

    def detach(self) -> None:
        """Unhook the framework, restoring it as it was (idempotent)."""
        with self._state_lock:
            if self._attached:
                self._detach()
                self._attached = False

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
