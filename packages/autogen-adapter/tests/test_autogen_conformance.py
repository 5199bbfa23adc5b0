"""The conformance kit for the AutoGen adapter: one ``AssistantAgent`` with the ``lookup`` tool,
run with ``agent.run(task=...)`` (sync form: ``asyncio.run``; streaming: ``model_client_stream``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from _ag_samples import kit_agent
from autogen_core.models import UserMessage
from fulmen.runner import AgentFn
from fulmen_autogen import EVENT_LOGGERS, AutoGenAdapter
from fulmen_testkit import AdapterConformanceTests


def logger_state() -> object:
    """What attach may change on AutoGen's event loggers."""
    loggers = [logging.getLogger(name) for name in EVENT_LOGGERS]
    return [(lg.level, lg.propagate, tuple(lg.handlers), tuple(lg.filters)) for lg in loggers]


class TestAutoGenConformance(AdapterConformanceTests):
    """The standard tests (AutoGen has no graph nodes: ``has_nodes = False``)."""

    adapter_class = AutoGenAdapter
    expected_agents = frozenset({"assistant"})
    has_nodes = False

    def make_agent(self, *, stream: bool = False, use_async: bool = False) -> AgentFn:
        return kit_agent(stream=stream, use_async=use_async)

    def call_model(self, model: Any) -> object:
        return asyncio.run(model.create([UserMessage(content="Say hi.", source="user")])).content

    def framework_state(self) -> object:
        return logger_state()
