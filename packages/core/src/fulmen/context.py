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
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Generator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from fulmen.protocol import Reward, Task

__all__ = [
    "EPISODE_URL_ENV",
    "EpisodeContext",
    "NoEpisodeError",
    "RewardError",
    "current_episode",
    "episode_scope",
    "reward",
]

EPISODE_URL_ENV = "FULMEN_EPISODE_URL"
"""Environment variable holding an episode's URL (``{gateway}/rollout/{episode_id}``)."""
AUTH_TOKEN_ENV = "FULMEN_AUTH_TOKEN"
"""Environment variable holding the gateway's bearer token, when it requires one."""

_REWARD_TIMEOUT_S = 10.0


class NoEpisodeError(RuntimeError):
    """:func:`reward` or :func:`current_episode` was called where no episode can be found."""


class RewardError(RuntimeError):
    """A reward could not be recorded (gateway unreachable, episode finished...)."""


RewardSink = Callable[[Reward], None]


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
        step: int | None = None,
        agent: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Reward:
        """Record a reward for this episode and return it.

        Args:
            value: the reward, a finite number.
            name: dimension of a multi-dimensional reward (None: the main reward).
            step: transition ``seq`` the reward belongs to (None: the episode's outcome).
            agent: agent the reward is meant for (None: every agent).
            metadata: free-form annotations.

        Raises:
            ProtocolError: ``value`` is not a finite number.
            RewardError: the gateway refused or could not be reached.
        """
        record = Reward(
            episode_id=self.episode_id,
            value=value,
            name=name,
            step=step,
            agent=agent,
            metadata=dict(metadata or {}),
        )
        if self.sink is not None:
            self.sink(record)
        else:
            _post_reward(self, record)
        return record


def _post_reward(ctx: EpisodeContext, record: Reward) -> None:
    import urllib.error  # lazily: keeps `import fulmen` light
    import urllib.request

    body = record.to_dict()
    del body["episode_id"]
    request = urllib.request.Request(
        f"{ctx.url}/rewards",
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
            f"gateway refused the reward for episode {ctx.episode_id} (HTTP {exc.code}): {detail}"
        ) from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise RewardError(
            f"could not reach the gateway at {ctx.gateway_url} to record a reward for episode "
            f"{ctx.episode_id}: {exc}"
        ) from exc


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
        _current.reset(token)


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
    step: int | None = None,
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

