"""Zero-touch mode through langchain-core's configure hook: on while attached, inert after
detach, registered once, one adapter at a time."""

from __future__ import annotations

import os

import pytest
from fulmen.adapters import AdapterError
from fulmen_langchain import LangChainAdapter, LangChainCallbackHandler
from langchain_core.callbacks import AsyncCallbackManager, BaseCallbackHandler, CallbackManager
from langchain_core.tracers import context as tracer_context


def _ours(handlers: list[BaseCallbackHandler]) -> list[LangChainCallbackHandler]:
    return [h for h in handlers if isinstance(h, LangChainCallbackHandler)]


def _our_hooks() -> int:
    # Reads langchain-core's private registry on purpose: it has no public view, and the
    # claim under test is that repeated attach/detach never grows it.
    return sum(
        1
        for _var, _inheritable, cls, env in tracer_context._configure_hooks
        if cls is LangChainCallbackHandler and env is not None
    )


def test_attached_runs_get_the_handler_and_detached_runs_do_not() -> None:
    assert _ours(CallbackManager.configure().handlers) == []
    adapter = LangChainAdapter().attach()
    try:
        (handler,) = _ours(CallbackManager.configure().handlers)
        assert handler._recorder() is adapter
        (async_handler,) = _ours(AsyncCallbackManager.configure().handlers)
        assert async_handler._recorder() is adapter
        # a run that already has the explicit handler does not get a second one
        explicit = CallbackManager.configure(inheritable_callbacks=[adapter.handler])
        assert _ours(explicit.handlers) == [adapter.handler]
    finally:
        adapter.detach()
    assert _ours(CallbackManager.configure().handlers) == []
    # a handler built while attached stops recording once its adapter is detached
    assert handler._recorder() is None
    # the explicit handler keeps recording: it is the user's choice
    assert adapter.handler._recorder() is adapter


def test_the_hook_is_registered_once_and_switched_by_this_process_variable() -> None:
    for _ in range(3):
        with LangChainAdapter():
            assert os.environ.get(f"FULMEN_LANGCHAIN_ZERO_TOUCH_{os.getpid()}") == "true"
        assert not any(k.startswith("FULMEN_LANGCHAIN") for k in os.environ)
    assert _our_hooks() == 1


def test_one_adapter_at_a_time() -> None:
    first = LangChainAdapter().attach()
    second = LangChainAdapter()
    try:
        with pytest.raises(AdapterError, match="another LangChainAdapter is attached"):
            second.attach()
        assert not second.attached
        second.detach()  # detaching one that is not attached changes nothing
        assert _ours(CallbackManager.configure().handlers)[0]._recorder() is first
    finally:
        first.detach()
    with second:
        assert _ours(CallbackManager.configure().handlers)[0]._recorder() is second
