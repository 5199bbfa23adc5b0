"""The OpenAI Agents SDK adapter: a trace provider of its own plus a transport listener, and
the ``RunConfig`` that points a run at its episode."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from agents import RunConfig
from agents.models.openai_chatcompletions import OpenAIChatCompletionsModel
from agents.tracing import GenerationSpanData, TraceProvider, get_current_span
from agents.tracing.provider import DefaultTraceProvider
from agents.tracing.setup import get_trace_provider, set_trace_provider
from fulmen.adapters import DEFAULT_MODEL, Adapter, FrameworkRequirement
from fulmen.context import EpisodeContext
from openai import AsyncOpenAI

from fulmen_openai._clients import EPISODE_HEADER, EPISODE_OWNED, client_options, scope_to_episode
from fulmen_openai._processor import FulmenTracingProcessor
from fulmen_openai._requirement import REQUIREMENT
from fulmen_openai._scope import episode_in_context
from fulmen_openai._transport import Exchange, install, uninstall

__all__ = ["AgentsSDKAdapter"]


class _FulmenTraceProvider(DefaultTraceProvider):
    """The SDK's default provider with fulmen's processor as its only processor."""

    def __init__(self, adapter: AgentsSDKAdapter, processor: FulmenTracingProcessor) -> None:
        super().__init__()
        self.adapter = adapter
        self.set_processors([processor])
        # Capture needs the spans; nothing leaves the machine, so tracing is on while attached
        # (this provider's flag only: the user's provider and its settings are kept as they are).
        self.set_disabled(False)


class AgentsSDKAdapter(Adapter):
    """Annotates the LLM calls of OpenAI Agents SDK runs (openai-agents >= 0.20, tested 0.24).

    ``attach()`` installs a trace provider whose only processor is fulmen's (so no trace is
    exported to OpenAI while attached) and puts the previous provider back on ``detach()``,
    untouched, with its processors and settings. The SDK offers no public way to read a
    provider's processor list, so the provider is swapped rather than its list edited.

    Each call is joined to its gateway record through the HTTP layer (see
    :mod:`fulmen_openai._processor`): the model must reach the gateway through an openai client
    (``httpx2`` or ``httpx``), e.g. the one in the ``RunConfig`` :meth:`model_for` returns.
    Runs with ``RunConfig(tracing_disabled=True)`` are not captured. Calls sent to the gateway's
    plain ``/v1`` routes get ``X-Episode-Id`` from the runner's context and that episode's own
    token in place of the client's key, as with :class:`~fulmen_openai.OpenAIClientAdapter`.

    Only one instance may be attached at a time (:class:`~fulmen.adapters.AdapterError`).
    """

    framework: ClassVar[str] = "openai-agents"
    requirement: ClassVar[FrameworkRequirement] = REQUIREMENT

    def __init__(self) -> None:
        super().__init__()
        self._processor = FulmenTracingProcessor(self)
        self._listener = _GenerationListener(self, self._processor)
        self._provider: _FulmenTraceProvider | None = None
        self._previous: TraceProvider | None = None

    @classmethod
    def model_for(
        cls,
        ctx: EpisodeContext,
        model: str = DEFAULT_MODEL,
        *,
        run_config: RunConfig | None = None,
        **client_kwargs: Any,
    ) -> RunConfig:
        """The ``RunConfig`` that sends every LLM call of a run to the episode ``ctx``::

            result = await Runner.run(agent, question, run_config=ADAPTER.model_for(ctx))

        A ``RunConfig`` rather than a bare ``Model``: its ``model`` (an
        ``OpenAIChatCompletionsModel``; ``.model`` of the result when you need it alone)
        overrides every agent's model, handoff targets included (one policy is trained), and
        it keeps traces local: while an adapter is attached its processor is the only one, and
        without one the run's tracing is disabled. Chat completions, not the Responses API:
        only chat completions return token ids.

        Args:
            ctx: the episode (given to the agent by fulmen's runner).
            model: the served model name.
            run_config: other settings of the run, kept (its ``model`` is replaced).
            **client_kwargs: ``AsyncOpenAI(...)`` arguments; ``max_retries`` defaults to 0 and
                ``timeout`` to :data:`~fulmen.adapters.MODEL_TIMEOUT_S`.

        Raises:
            AdapterError: ``client_kwargs`` sets ``base_url`` or ``api_key`` (the episode's).
        """
        cls._refuse_episode_settings(client_kwargs, EPISODE_OWNED)
        client = AsyncOpenAI(**client_options(ctx, client_kwargs))
        base = run_config if run_config is not None else RunConfig()
        captured = isinstance(get_trace_provider(), _FulmenTraceProvider)
        return dataclasses.replace(
            base,
            model=OpenAIChatCompletionsModel(model=model, openai_client=client),
            tracing_disabled=base.tracing_disabled or not captured,
        )

    def _attach(self) -> None:
        self._processor.enabled = True
        self._previous = get_trace_provider()
        self._provider = _FulmenTraceProvider(self, self._processor)
        set_trace_provider(self._provider)
        install(self._listener, priority=0)

    def _detach(self) -> None:
        uninstall(self._listener)
        self._processor.enabled = False
        if get_trace_provider() is self._provider and self._previous is not None:
            set_trace_provider(self._previous)
        else:
            self.log.warning(
                "the Agents SDK trace provider was replaced while fulmen was attached; it is "
                "left as it is (fulmen's processor no longer records anything)"
            )
        self._processor.shutdown()
        self._provider = None
        self._previous = None


class _GenerationListener:
    """Claims the HTTP calls made inside a generation span and records their request ids."""

    def __init__(self, adapter: AgentsSDKAdapter, processor: FulmenTracingProcessor) -> None:
        self._adapter = adapter
        self._processor = processor

    def on_request(self, exchange: Exchange) -> None:
        with self._adapter.guard("an outgoing request"):
            if exchange.owner is not None:
                return
            span = get_current_span()
            if span is None or not isinstance(span.span_data, GenerationSpanData):
                return
            if not self._processor.expects(span.span_id):
                return
            exchange.owner = self._adapter.framework
            exchange.notes["span_id"] = span.span_id
            if "/rollout/" not in exchange.path and exchange.header(EPISODE_HEADER) is None:
                ctx = episode_in_context()
                if ctx is not None:  # a shared client: this episode, with its own token only
                    scope_to_episode(exchange, ctx)

    def on_response(self, exchange: Exchange) -> None:
        with self._adapter.guard("a response"):
            if exchange.owner != self._adapter.framework:
                return
            request_id = exchange.response_headers.get("x-request-id")
            if request_id and 200 <= (exchange.status or 0) < 300:
                self._processor.record_request(exchange.notes["span_id"], str(request_id))
