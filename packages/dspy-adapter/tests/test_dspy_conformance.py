"""The fulmen conformance kit, run against DSPy's ``ReAct`` through the real gateway."""

from __future__ import annotations

from typing import Any

import dspy
from _dspy_sample import make_react_agent, react_responder
from fulmen.runner import AgentFn
from fulmen_dspy import DSPyAdapter
from fulmen_testkit import AdapterConformanceTests
from fulmen_testkit.vllm_double.generation import Responder


class TestDSPyConformance(AdapterConformanceTests):
    """``dspy.ReAct("question -> answer", tools=[lookup])``: react (lookup), react (finish),
    extract."""

    adapter_class = DSPyAdapter
    expected_agents = frozenset({"ReAct"})
    calls_per_episode = 3

    def make_agent(self, *, stream: bool = False, use_async: bool = False) -> AgentFn:
        return make_react_agent(stream=stream, use_async=use_async)

    def make_responder(self) -> Responder | None:
        return react_responder

    def call_model(self, model: Any) -> object:
        return model("Say hi.")

    def framework_state(self) -> object:
        callbacks = dspy.settings.get("callbacks")
        return id(callbacks), list(callbacks or [])
