"""Naming the agent behind plain openai client calls, and the episode a call runs in."""

from __future__ import annotations

from collections.abc import Generator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from fulmen import context as _fulmen_context
from fulmen.context import EpisodeContext

__all__ = ["AgentScope", "agent_scope", "current_agent_scope", "episode_in_context"]


@dataclass(frozen=True, slots=True)
class AgentScope:
    """The agent (and optionally node) that calls made inside :func:`agent_scope` belong to."""

    agent: str
    """Agent / role name."""
    node: str | None = None
    """Step, node or module name inside the agent."""


_scope: ContextVar[AgentScope | None] = ContextVar("fulmen_openai_agent", default=None)


@contextmanager
def agent_scope(agent: str, *, node: str | None = None) -> Generator[AgentScope]:
    """Inside the block, LLM calls made with a plain openai client are annotated with ``agent``
    (and ``node``). Nests; inherited by ``async`` tasks and ``copy_context`` threads like any
    context variable. Without a scope, the request's ``user`` field names the agent.
    """
    token = _scope.set(AgentScope(agent, node))
    try:
        yield _scope.get() or AgentScope(agent, node)
    finally:
        _scope.reset(token)


def current_agent_scope() -> AgentScope | None:
    """The innermost :func:`agent_scope` around the caller, or None."""
    return _scope.get()


def episode_in_context() -> EpisodeContext | None:
    """The episode the runner set for the calling thread or task, or None.

    Only the context variable counts: unlike :func:`fulmen.current_episode`, this never falls
    back to "the single episode running in this process", so a call made from a thread that
    lost its context is flagged instead of being attributed by a guess.
    """
    return _fulmen_context.scoped_episode()
