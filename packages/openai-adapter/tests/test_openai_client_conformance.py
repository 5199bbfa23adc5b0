"""The conformance kit on the plain openai client adapter (a hand-written tool loop)."""

from __future__ import annotations

from typing import Any, ClassVar

from _oa_samples import make_client_agent
from fulmen.adapters import Adapter
from fulmen.runner import AgentFn
from fulmen_openai import OpenAIClientAdapter
from fulmen_openai._transport import patched_methods
from fulmen_testkit import MODEL, AdapterConformanceTests


class TestOpenAIClientConformance(AdapterConformanceTests):
    adapter_class: ClassVar[type[Adapter]] = OpenAIClientAdapter
    expected_agents: ClassVar[frozenset[str]] = frozenset({"assistant"})

    def make_agent(self, *, stream: bool = False, use_async: bool = False) -> AgentFn:
        return make_client_agent(stream=stream, use_async=use_async)

    def call_model(self, model: Any) -> object:
        messages: Any = [{"role": "user", "content": "Say hi."}]
        reply = model.chat.completions.create(model=MODEL, messages=messages)
        return reply.choices[0].message.content

    def framework_state(self) -> object:
        return patched_methods()
