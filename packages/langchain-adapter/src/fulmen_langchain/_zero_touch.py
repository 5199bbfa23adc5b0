"""Zero-touch mode: every LangChain/LangGraph run in the process gets the adapter's handler,
without the user passing ``callbacks=``.

It uses langchain-core's public configure hook, the mechanism LangChain's own env-enabled
tracers use: ``register_configure_hook(var, inheritable=True, handle_class=..., env_var=...)``
makes ``CallbackManager.configure`` add ``handle_class()`` to every run (and its children)
while ``env_var`` is set, unless the run already has a handler of that class (so an explicit
``adapter.handler`` is never doubled).

langchain-core keeps registrations in a module-level list and has no public way to remove
one, so the hook is registered once per process, on the first attach, and is inert whenever
no adapter is attached: attach sets this process's variable, detach removes it, after which
``CallbackManager.configure`` builds exactly the handlers it built before. The variable's name
carries the process id, so a subprocess never inherits an enabled hook. The context variable
given to the hook is never set (the hook needs one; a run gets the handler through the
environment variable only). Only one adapter is ever enabled: the
:class:`~fulmen.adapters.Adapter` base attaches at most one
:class:`~fulmen_langchain.LangChainAdapter` per process.
"""

from __future__ import annotations

import os
import threading
from contextvars import ContextVar
from typing import TYPE_CHECKING

from langchain_core.tracers.context import register_configure_hook

from fulmen_langchain._handler import LangChainCallbackHandler, bind_zero_touch

if TYPE_CHECKING:
    from fulmen_langchain._adapter import LangChainAdapter

__all__ = ["disable", "enable", "env_var"]

_lock = threading.Lock()
_registered_env: str | None = None
_hook_var: ContextVar[LangChainCallbackHandler | None] = ContextVar(
    "fulmen_langchain_handler", default=None
)


def env_var() -> str:
    """The environment variable that turns this process's hook on (``FULMEN_LANGCHAIN_ZERO_TOUCH_<pid>``)."""
    return f"FULMEN_LANGCHAIN_ZERO_TOUCH_{os.getpid()}"


def enable(adapter: LangChainAdapter) -> None:
    """Make every run record for ``adapter``."""
    global _registered_env
    with _lock:
        name = env_var()
        if _registered_env != name:
            register_configure_hook(
                _hook_var, True, handle_class=LangChainCallbackHandler, env_var=name
            )
            _registered_env = name
        bind_zero_touch(adapter)
        os.environ[name] = "true"


def disable() -> None:
    """Stop giving runs the enabled adapter's handler."""
    with _lock:
        os.environ.pop(env_var(), None)
        bind_zero_touch(None)
