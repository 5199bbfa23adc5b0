"""The Agents SDK adapter beyond the kit: guardrails, the trace provider swap, model_for."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _oa_samples import sdk_agents
from agents import (
    Agent,
    GuardrailFunctionOutput,
    RunConfig,
    RunContextWrapper,
    Runner,
    input_guardrail,
    output_guardrail,
)
from agents.models.openai_chatcompletions import OpenAIChatCompletionsModel
from agents.tracing import Span, Trace, TracingProcessor, get_trace_provider, set_trace_processors
from fulmen import EpisodeContext, Task
from fulmen.adapters import MODEL_TIMEOUT_S
from fulmen.protocol import EpisodeStatus
from fulmen_openai import AgentsSDKAdapter
from fulmen_testkit import MODEL, KitStack, kit_task


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[KitStack]:
    with KitStack(tmp_path) as running:
        yield running


@input_guardrail
def polite(ctx: RunContextWrapper[Any], agent: Agent[Any], text: Any) -> GuardrailFunctionOutput:
    return GuardrailFunctionOutput(output_info="ok", tripwire_triggered=False)


@output_guardrail
def short(ctx: RunContextWrapper[Any], agent: Agent[Any], output: Any) -> GuardrailFunctionOutput:
    return GuardrailFunctionOutput(output_info="ok", tripwire_triggered=False)


def test_guardrails_are_captured(stack: KitStack) -> None:
    """Input and output guardrails land on the agent's calls, with whether they triggered."""

    async def agent(task: Task, ctx: EpisodeContext) -> str:
        triage = sdk_agents(task, input_guardrails=[polite], output_guardrails=[short])
        config = AgentsSDKAdapter.model_for(ctx, MODEL)
        result = await Runner.run(triage, str(task.data["question"]), run_config=config)
        return str(result.final_output)

    with AgentsSDKAdapter() as adapter:
        result = stack.run(agent, [kit_task(0)])[0]
    assert result.episode.status is EpisodeStatus.SUCCEEDED, result.episode.error
    transitions = stack.store.transitions(result.episode.id)
    assert [t.agent for t in transitions] == ["triage", "researcher", "researcher"]
    assert transitions[0].metadata.get("guardrails") == [{"name": "polite", "triggered": False}]
    assert transitions[-1].metadata.get("guardrails") == [{"name": "short", "triggered": False}]
    assert transitions[0].metadata.get("handoff") == {"from": "triage", "to": "researcher"}
    assert adapter.failures == 0


class _Recorder(TracingProcessor):
    def __init__(self) -> None:
        self.spans: list[str] = []

    def on_trace_start(self, trace: Trace) -> None: ...
    def on_trace_end(self, trace: Trace) -> None: ...
    def on_span_start(self, span: Span[Any]) -> None: ...

    def on_span_end(self, span: Span[Any]) -> None:
        self.spans.append(span.span_id)

    def shutdown(self) -> None: ...
    def force_flush(self) -> None: ...


def test_previous_processors_are_suspended_then_restored(stack: KitStack) -> None:
    """While attached only fulmen's processor sees spans (nothing is exported); after detach
    the user's provider and processors are back and receive spans again."""
    recorder = _Recorder()
    provider = get_trace_provider()
    set_trace_processors([recorder])
    try:
        with AgentsSDKAdapter():
            assert get_trace_provider() is not provider
            stack.run(_sdk_runner(), [kit_task(0)])
        assert recorder.spans == []
        assert get_trace_provider() is provider
        stack.run(_sdk_runner(tracing=True), [kit_task(1)])
        assert recorder.spans, "the user's processor no longer receives spans"
    finally:
        set_trace_processors([])


def _sdk_runner(*, tracing: bool = False) -> Any:
    async def agent(task: Task, ctx: EpisodeContext) -> str:
        config = AgentsSDKAdapter.model_for(ctx, MODEL)
        if tracing:
            config.tracing_disabled = False
        result = await Runner.run(sdk_agents(task), str(task.data["question"]), run_config=config)
        return str(result.final_output)

    return agent


def test_model_for_points_at_the_episode_and_never_traces_to_openai() -> None:
    ctx = EpisodeContext(episode_id="ep-1", gateway_url="http://127.0.0.1:1")
    base = RunConfig(workflow_name="mine")
    config = AgentsSDKAdapter.model_for(ctx, run_config=base, max_retries=1)
    assert config.tracing_disabled, "without the adapter the run must not be traced"
    assert config.workflow_name == "mine" and base.model is None
    model = config.model
    assert isinstance(model, OpenAIChatCompletionsModel) and model.model == "policy"
    client = model._client  # the SDK keeps the client private; only the defaults are checked
    assert str(client.base_url) == f"{ctx.base_url}/" and client.api_key == ctx.api_key
    assert (client.max_retries, client.timeout) == (1, MODEL_TIMEOUT_S)
    with AgentsSDKAdapter():
        assert not AgentsSDKAdapter.model_for(ctx).tracing_disabled
