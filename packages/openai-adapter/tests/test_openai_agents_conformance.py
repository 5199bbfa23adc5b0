"""The conformance kit on the OpenAI Agents SDK adapter (two agents, a handoff, one tool)."""

from __future__ import annotations

from typing import Any, ClassVar

from _oa_samples import make_sdk_agent
from agents import Agent, Runner
from agents.tracing import get_trace_provider
from fulmen.adapters import Adapter
from fulmen.runner import AgentFn
from fulmen_openai import AgentsSDKAdapter
from fulmen_openai._transport import patched_methods
from fulmen_testkit import AdapterConformanceTests


class TestAgentsSDKConformance(AdapterConformanceTests):
    adapter_class: ClassVar[type[Adapter]] = AgentsSDKAdapter
    expected_agents: ClassVar[frozenset[str]] = frozenset({"triage", "researcher"})
    calls_per_episode: ClassVar[int] = 3  # triage hands off; researcher calls lookup, answers
    supports_multi_agent: ClassVar[bool] = True

    def make_agent(self, *, stream: bool = False, use_async: bool = False) -> AgentFn:
        return make_sdk_agent(stream=stream, use_async=use_async)

    def call_model(self, model: Any) -> object:
        probe: Agent[Any] = Agent(name="probe", instructions="Answer briefly.")
        return Runner.run_sync(probe, "Say hi.", run_config=model).final_output

    def framework_state(self) -> object:
        return (get_trace_provider(), patched_methods())
