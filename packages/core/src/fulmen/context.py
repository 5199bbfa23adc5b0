"""The episode context and the reward API for agent code.

Agent code calls :func:`fulmen.reward` from anywhere inside an episode::

    import fulmen

    def my_tool(query: str) -> str:
        ...
        fulmen.reward(1.0 if ok else 0.0, name="tool_ok")   # lands on the current episode

How the current episode is found, in order:

1. the context variable set by the runner (inherited by ``async`` tasks, by
   ``asyncio.to_thread`` / ``copy_context().run`` and by frameworks that copy the context
   into their worker threads);
2. the ``FULMEN_EPISODE_URL`` environment variable (a subprocess started by the agent, or an
   agent that runs in another process or machine and only knows the episode's URL);
3. the single episode running in this process, when exactly one is (threads started with
   plain ``threading.Thread`` do not inherit context variables).

Anything else is an error that says which of these to use (:class:`NoEpisodeError`).
In-process, a reward goes straight to the gateway's store; otherwise it is POSTed to
``{episode_url}/rewards`` (with a timeout).

``step="current"`` rewards the LLM call the code runs under: the call a framework adapter
marked with :func:`step_scope` (e.g. around the tool that call asked for), else the episode's
latest call an adapter has annotated in this process. Adapters send their structure with
:meth:`EpisodeContext.annotate` (in-process straight to the store, else POSTed to
``{episode_url}/annotations``).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Generator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal

from fulmen.errors import EpisodeError
from fulmen.protocol import Annotation, Reward, Task, request_id_of

__all__ = [
    "EPISODE_URL_ENV",
    "EpisodeContext",
    "NoEpisodeError",
    "RewardError",
    "current_episode",
    "current_step",
    "episode_scope",
    "find_episode",
    "reward",
    "scoped_episode",
    "step_scope",
    "use_episode",
]

EPISODE_URL_ENV = "FULMEN_EPISODE_URL"
"""Environment variable holding an episode's URL (``{gateway}/rollout/{episode_id}``)."""
AUTH_TOKEN_ENV = "FULMEN_AUTH_TOKEN"
"""Environment variable holding the gateway's bearer token, when it requires one."""

_REWARD_TIMEOUT_S = 10.0


class NoEpisodeError(EpisodeError):
    """:func:`reward` or :func:`current_episode` was called where no episode can be found."""


class RewardError(EpisodeError):
    """A reward could not be recorded (gateway unreachable, episode finished...)."""


RewardSink = Callable[[Reward], None]
AnnotationSink = Callable[[Annotation], None]
Step = int | Literal["current"] | None
"""A reward's step: a transition ``seq``, ``"current"`` (see the module docstring) or None
(the episode's outcome)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EpisodeContext:
    """What agent code needs to know about the episode it runs in.

    Thread-safe and cheap to copy. ``base_url`` is what to give an OpenAI-compatible client.
    """

    episode_id: str
    """The episode's id."""
    gateway_url: str
    """Base URL of the gateway (``http://127.0.0.1:8400``)."""
    task: Task | None = None
    """The task being solved (None when the context was rebuilt from a URL)."""
    auth_token: str | None = None
    """Bearer token for the gateway, if it requires one."""
    sink: RewardSink | None = field(default=None, repr=False, compare=False)
    """In-process reward recorder; None means rewards are POSTed to the gateway."""
    annotation_sink: AnnotationSink | None = field(default=None, repr=False, compare=False)
    """In-process annotation recorder; None means annotations are POSTed to the gateway."""

    @property
    def url(self) -> str:
        """The episode's URL: ``{gateway}/rollout/{episode_id}``."""
        return f"{self.gateway_url}/rollout/{self.episode_id}"

    @property
    def base_url(self) -> str:
        """OpenAI-compatible base URL for this episode's LLM calls (``{url}/v1``)."""
        return f"{self.url}/v1"

    @property
    def api_key(self) -> str:
        """The key to give an OpenAI client (the gateway's token, or a placeholder)."""
        return self.auth_token or "fulmen"

    @property
    def headers(self) -> dict[str, str]:
        """Headers that attribute a call to this episode on the plain ``/v1`` routes."""
        headers = {"X-Episode-Id": self.episode_id}
        if self.auth_token:
            headers["Authorization"] = f"Bearer {self.auth_token}"
        return headers

    def env(self) -> dict[str, str]:
        """Environment variables for a subprocess that should act inside this episode."""
        env = {EPISODE_URL_ENV: self.url, "OPENAI_BASE_URL": self.base_url}
        env["OPENAI_API_KEY"] = self.api_key
        if self.auth_token:
            env[AUTH_TOKEN_ENV] = self.auth_token
        return env

    @classmethod
    def from_url(cls, url: str, *, auth_token: str | None = None) -> EpisodeContext:
        """Rebuild a context from an episode URL (``{gateway}/rollout/{episode_id}``).

        Raises:
            ValueError: the URL does not have that shape.
        """
        base, sep, rest = url.rstrip("/").rpartition("/rollout/")
        episode_id = rest.split("/", 1)[0]
        if not sep or not base or not episode_id:
            raise ValueError(
                f"not an episode URL: {url!r}; expected '<gateway>/rollout/<episode_id>'"
            )
        return cls(episode_id=episode_id, gateway_url=base, auth_token=auth_token)

    def reward(
        self,
        value: float,
        *,
        name: str | None = None,
        step: Step = None,
        agent: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Reward:
        """Record a reward for this episode and return it.

        Args:
            value: the reward, a finite number.
            name: dimension of a multi-dimensional reward (None: the main reward).
            step: transition ``seq`` the reward belongs to, ``"current"`` for the call the
                code runs under (module docstring), or None for the episode's outcome.
            agent: agent the reward is meant for (None: every agent).
            metadata: free-form annotations.

        Raises:
            ProtocolError: ``value`` is not a finite number.
            RewardError: the gateway refused or could not be reached, or ``step="current"``
                where no call is known.
        """
        record = Reward(
            episode_id=self.episode_id,
            value=value,
            name=name,
            step=current_step(self.episode_id) if step == "current" else step,
            agent=agent,
            metadata=dict(metadata or {}),
        )
        if self.sink is not None:
            self.sink(record)
        else:
            _post(self, "rewards", record)
        return record

    def annotate(
        self,
        request_id: str,
        *,
        framework: str,
        agent: str | None = None,
        node: str | None = None,
        path: tuple[str, ...] = (),
        tool_results: tuple[Mapping[str, Any], ...] = (),
        metadata: Mapping[str, Any] | None = None,
    ) -> Annotation:
        """Record a framework adapter's structure for one of this episode's LLM calls.

        Args:
            request_id: the call's request id, or its response id (``chatcmpl-...``).
            framework: the adapter's name (``langchain``...).
            agent, node, path, tool_results, metadata: see :class:`~fulmen.Annotation`.

        Raises:
            RewardError: the gateway refused (e.g. the call is not this episode's) or could
                not be reached.
        """
        rid = request_id_of(request_id)
        record = Annotation(
            episode_id=self.episode_id,
            request_id=rid,
            framework=framework,
            agent=agent,
            node=node,
            path=tuple(path),
            tool_results=tuple(tool_results),
            metadata=dict(metadata or {}),
        )
        if self.annotation_sink is not None:
            self.annotation_sink(record)
        else:
            _post(self, "annotations", record)
        _note_call(self.episode_id, rid)
        return record


def _post(ctx: EpisodeContext, route: str, record: Reward | Annotation) -> None:
    import urllib.error  # lazily: keeps `import fulmen` light
    import urllib.request

    what = "reward" if route == "rewards" else "annotation"
    body = record.to_dict()
    del body["episode_id"]
    request = urllib.request.Request(
        f"{ctx.url}/{route}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **ctx.headers},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=_REWARD_TIMEOUT_S) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:500]
        raise RewardError(
            f"gateway refused the {what} for episode {ctx.episode_id} (HTTP {exc.code}): {detail}"
        ) from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise RewardError(
            f"could not reach the gateway at {ctx.gateway_url} to record a {what} for episode "
            f"{ctx.episode_id}: {exc}"
        ) from exc


_step_hint: ContextVar[tuple[str, int] | None] = ContextVar("fulmen_step", default=None)
_last_call: dict[str, int] = {}
_last_call_lock = threading.Lock()


def _note_call(episode_id: str, request_id: str) -> None:
    """Remember the latest annotated call of the episode (for ``step="current"``)."""
    _, _, seq = request_id.rpartition(".")
    if seq.isdigit():
        with _last_call_lock:
            if int(seq) >= _last_call.get(episode_id, -1):
                _last_call[episode_id] = int(seq)


@contextmanager
def step_scope(episode_id: str, seq: int) -> Generator[None]:
    """Inside the block, ``step="current"`` means call ``seq`` of ``episode_id``.

    For adapters: wrap the code a call led to (the tools it asked for) when the framework runs
    it in the adapter's context.
    """
    token = _step_hint.set((episode_id, seq))
    try:
        yield
    finally:
        _step_hint.reset(token)


def current_step(episode_id: str) -> int:
    """The ``seq`` that ``step="current"`` means for ``episode_id`` (module docstring).

    Raises:
        RewardError: no adapter has marked or annotated a call of the episode here.
    """
    hint = _step_hint.get()
    if hint is not None and hint[0] == episode_id:
        return hint[1]
    with _last_call_lock:
        seq = _last_call.get(episode_id)
    if seq is None:
        raise RewardError(
            f'step="current": no LLM call of episode {episode_id} is known here. It needs a '
            "framework adapter attached (it tells fulmen which call the code runs under); "
            "otherwise pass step=<seq> or leave step out for the episode's outcome."
        )
    return seq


_current: ContextVar[EpisodeContext | None] = ContextVar("fulmen_episode", default=None)
_active: dict[str, EpisodeContext] = {}
_active_lock = threading.Lock()


@contextmanager
def episode_scope(ctx: EpisodeContext) -> Generator[EpisodeContext]:
    """Make ``ctx`` the current episode inside the ``with`` block (and what it spawns)."""
    token = _current.set(ctx)
    with _active_lock:
        _active[ctx.episode_id] = ctx
    try:
        yield ctx
    finally:
        with _active_lock:
            _active.pop(ctx.episode_id, None)
        with _last_call_lock:
            _last_call.pop(ctx.episode_id, None)
        _current.reset(token)


def scoped_episode() -> EpisodeContext | None:
    """The episode of the caller's context only (no environment or single-episode fallback).

    For adapters deciding where a call belongs: None means "not known here", never a guess.
    """
    return _current.get()


@contextmanager
def use_episode(ctx: EpisodeContext) -> Generator[EpisodeContext]:
    """Make ``ctx`` the current episode in this context without registering it as running.

    For adapters that run user code on threads the framework does not copy the context into
    (e.g. ``dspy.Parallel`` workers): inside the block, :func:`reward` finds ``ctx``. The
    episode's own :func:`episode_scope` (held by the runner) is left untouched.
    """
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)


def find_episode(episode_id: str) -> EpisodeContext | None:
    """The context of ``episode_id`` if it runs in this process (inside :func:`episode_scope`)."""
    with _active_lock:
        return _active.get(episode_id)


def current_episode() -> EpisodeContext:
    """The episode the caller runs in (see the module docstring for how it is found).

    Raises:
        NoEpisodeError: no episode can be determined; the message says how to fix it.
    """
    ctx = _current.get()
    if ctx is not None:
        return ctx
    url = os.environ.get(EPISODE_URL_ENV)
    if url:
        try:
            return EpisodeContext.from_url(url, auth_token=os.environ.get(AUTH_TOKEN_ENV))
        except ValueError as exc:
            raise NoEpisodeError(f"{EPISODE_URL_ENV} is set but invalid: {exc}") from exc
    with _active_lock:
        running = list(_active.values())
    if len(running) == 1:
        return running[0]
    if not running:
        raise NoEpisodeError(
            "fulmen.reward() was called outside an episode. Call it from agent code run by "
            f"fulmen's runner, or set {EPISODE_URL_ENV} to the episode's URL "
            "('<gateway>/rollout/<episode_id>') in a process that runs outside the runner."
        )
    raise NoEpisodeError(
        f"fulmen.reward() was called from a thread that did not inherit its episode while "
        f"{len(running)} episodes run in this process. Start the thread with "
        "contextvars.copy_context().run(...) (or asyncio.to_thread), or call ctx.reward(...) "
        "on the EpisodeContext the agent received."
    )


def reward(
    value: float,
    *,
    name: str | None = None,
    step: Step = None,
    agent: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Reward:
    """Record a reward for the current episode. See :meth:`EpisodeContext.reward`.

    Raises:
        NoEpisodeError: called outside an episode.
        ProtocolError: ``value`` is not a finite number.
        RewardError: the gateway refused or could not be reached.
    """
    return current_episode().reward(value, name=name, step=step, agent=agent, metadata=metadata)

