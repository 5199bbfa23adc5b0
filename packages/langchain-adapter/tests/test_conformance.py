"""The standard conformance suite, run against a LangGraph ReAct graph."""

from __future__ import annotations

import os
from typing import Any, ClassVar

from _lc_agents import GRAPH_NAME, kit_agent
from fulmen.runner import AgentFn
from fulmen_langchain import LangChainAdapter
from fulmen_testkit import AdapterConformanceTests
from langchain_core.callbacks import CallbackManager


class TestLangChainConformance(AdapterConformanceTests):
    adapter_class = LangChainAdapter
    expected_agents: ClassVar[frozenset[str]] = frozenset({GRAPH_NAME})

    def make_agent(self, *, stream: bool = False, use_async: bool = False) -> AgentFn:
        return kit_agent(stream=stream, use_async=use_async)

    def call_model(self, model: Any) -> object:
        return model.invoke("Say hi.").content

    def framework_state(self) -> object:
        """What a run observes of LangChain's global hooks: the handlers a fresh run gets,
        and this package's environment switch."""
        handlers = CallbackManager.configure().handlers
        return (
            tuple(type(h).__qualname__ for h in handlers),
            sorted(k for k in os.environ if k.startswith("FULMEN_LANGCHAIN")),
        )
