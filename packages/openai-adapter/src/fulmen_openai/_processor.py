"""The Agents SDK tracing processor that turns the SDK's spans into fulmen annotations.

The SDK's spans carry the structure (agent, turn, tools, handoffs, guardrails) but no response
id: a generation span only holds the messages. The join is made at the HTTP layer instead: the
model's HTTP call runs with its generation span as the SDK's current span, so the adapter's
transport listener records ``generation span id -> X-Request-Id`` (the gateway's
``{episode}.{seq}``, the same id the SDK puts in ``ModelResponse.request_id``) and this
processor picks it up when the span ends.

What is sent, per LLM call:

* when its generation span ends (before its tools run): agent (the enclosing agent span's
  name), node (the same name), path (workflow, agent, turn), metadata (trace and span ids,
  turn, and the guardrails seen so far);
* when each function span under the same turn ends: a tool result
  ``{tool_call_id, name, output}`` (or ``error``), the tool call id matched from the call's
  output by name and arguments;
* when a handoff span ends: ``metadata["handoff"] = {"from", "to"}``;
* when a guardrail span ends: ``metadata["guardrails"]`` (every guardrail of that call so far).

Contract (the SDK's): thread-safe, non-blocking apart from recording an annotation, never
raises into the agent run (every hook body runs under the adapter's guard).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from agents.tracing import (
    AgentSpanData,
    CustomSpanData,
    FunctionSpanData,
    GenerationSpanData,
    GuardrailSpanData,
    HandoffSpanData,
    Span,
    TaskSpanData,
    Trace,
    TracingProcessor,
    TurnSpanData,
)
from fulmen.adapters import Adapter, CallInfo

__all__ = ["FulmenTracingProcessor"]

_MAX_PENDING_REQUESTS = 65536


@dataclass(frozen=True, slots=True)
class _SpanInfo:
    trace_id: str
    parent_id: str | None
    label: str | None
    agent: str | None
    turn: int | None
    is_task: bool


@dataclass(slots=True)
class _Call:
    response_id: str
    agent: str | None
    tool_calls: list[tuple[str, str, str]]
    """``(tool_call_id, name, arguments)`` the call asked for, not yet matched to a tool run."""
    guardrails: list[dict[str, Any]] = field(default_factory=list)


class FulmenTracingProcessor(TracingProcessor):
    """Receives every trace and span of the SDK while the adapter is attached. See the module
    docstring for what it records."""

    def __init__(self, adapter: Adapter) -> None:
        self._adapter = adapter
        self._lock = threading.Lock()
        self._traces: dict[str, str] = {}
        self._spans: dict[str, _SpanInfo] = {}
        self._requests: dict[str, str] = {}
        self._calls: dict[str, _Call] = {}
        self._pending_guardrails: dict[str, list[dict[str, Any]]] = {}
        self.enabled = True
        """False once the adapter detached (a late span is then ignored)."""

    # ------------------------------------------------------------------ transport side

    def expects(self, span_id: str) -> bool:
        """True when ``span_id`` is an open generation span of this processor."""
        with self._lock:
            return span_id in self._spans

    def record_request(self, span_id: str, request_id: str) -> None:
        """The gateway answered the model call of generation span ``span_id`` with this id."""
        with self._lock:
            self._requests[span_id] = request_id
            while len(self._requests) > _MAX_PENDING_REQUESTS:
                self._requests.pop(next(iter(self._requests)))

    # ------------------------------------------------------------------ TracingProcessor

    def on_trace_start(self, trace: Trace) -> None:
        with self._adapter.guard("on_trace_start"), self._lock:
            self._traces[trace.trace_id] = trace.name

    def on_trace_end(self, trace: Trace) -> None:
        with self._adapter.guard("on_trace_end"), self._lock:
            self._traces.pop(trace.trace_id, None)

    def on_span_start(self, span: Span[Any]) -> None:
        with self._adapter.guard("on_span_start"):
            data = span.span_data
            agent = data.name if isinstance(data, AgentSpanData) else None
            turn = data.turn if isinstance(data, TurnSpanData) else None
            info = _SpanInfo(
                trace_id=span.trace_id,
                parent_id=span.parent_id,
                label=_label(data),
                agent=agent,
                turn=turn,
                is_task=isinstance(data, TaskSpanData),
            )
            with self._lock:
                self._spans[span.span_id] = info

    def on_span_end(self, span: Span[Any]) -> None:
        with self._adapter.guard("on_span_end"):
            try:
                if self.enabled:
                    self._dispatch(span)
            finally:
                with self._lock:
                    self._spans.pop(span.span_id, None)
                    self._calls.pop(span.span_id, None)
                    self._requests.pop(span.span_id, None)
                    self._pending_guardrails.pop(span.span_id, None)

    def shutdown(self) -> None:
        """Forget all state (nothing is buffered)."""
        with self._lock:
            self._traces.clear()
            self._spans.clear()
            self._requests.clear()
            self._calls.clear()
            self._pending_guardrails.clear()

    def force_flush(self) -> None:
        """Nothing to flush: annotations are recorded as spans end."""

    # ------------------------------------------------------------------ spans

    def _dispatch(self, span: Span[Any]) -> None:
        data = span.span_data
        if isinstance(data, GenerationSpanData):
            self._generation_ended(span, data)
        elif isinstance(data, FunctionSpanData):
            self._function_ended(span, data)
        elif isinstance(data, HandoffSpanData):
            call = self._call_above(span.parent_id)
            if call is not None:
                handoff = {"from": data.from_agent, "to": data.to_agent}
                self._annotate(call, metadata={"handoff": handoff})
        elif isinstance(data, GuardrailSpanData):
            self._guardrail_ended(span, data)

    def _generation_ended(self, span: Span[Any], data: GenerationSpanData) -> None:
        with self._lock:
            request_id = self._requests.pop(span.span_id, None)
            chain = self._ancestors(span.parent_id)
            trace_name = self._traces.get(span.trace_id)
        if request_id is None:
            self._adapter.log.debug(
                "generation span %s made no call through a fulmen gateway", span.span_id
            )
            return
        agent_info = next((info for _, info in chain if info.agent is not None), None)
        agent = agent_info.agent if agent_info is not None else None
        turn = next((info.turn for _, info in chain if info.turn is not None), None)
        labels = [info.label for _, info in reversed(chain) if info.label]
        if trace_name and not any(info.is_task for _, info in chain):
            labels.insert(0, trace_name)
        call = _Call(response_id=request_id, agent=agent, tool_calls=_tool_calls(data.output))
        keys = [key for key, info in chain if info.turn is not None or info.agent is not None]
        with self._lock:
            for key in keys[:2]:
                self._calls[key] = call
            agent_key = next((key for key, info in chain if info.agent is not None), None)
            if agent_key is not None:
                call.guardrails.extend(self._pending_guardrails.pop(agent_key, []))
        metadata: dict[str, Any] = {
            "trace_id": span.trace_id,
            "span_id": span.span_id,
            "turn": turn,
        }
        if call.guardrails:
            metadata["guardrails"] = list(call.guardrails)
        self._adapter.annotate(
            CallInfo(
                response_id=request_id,
                agent=agent,
                node=agent,
                path=tuple(labels),
                metadata=metadata,
            )
        )

    def _function_ended(self, span: Span[Any], data: FunctionSpanData) -> None:
        call = self._call_above(span.parent_id)
        if call is None:
            return
        with self._lock:
            match = next(
                (c for c in call.tool_calls if c[1] == data.name and c[2] == data.input),
                next((c for c in call.tool_calls if c[1] == data.name), None),
            )
            if match is not None:
                call.tool_calls.remove(match)
        result: dict[str, Any] = {"tool_call_id": match[0] if match else None, "name": data.name}
        error = span.error
        if error is not None:
            result["error"] = error.get("message")
        else:
            result["output"] = data.output
        self._adapter.annotate(
            CallInfo(response_id=call.response_id, agent=call.agent, tool_results=(result,))
        )

    def _guardrail_ended(self, span: Span[Any], data: GuardrailSpanData) -> None:
        item = {"name": data.name, "triggered": data.triggered}
        call = self._call_above(span.parent_id)
        if call is None:
            with self._lock:
                chain = self._ancestors(span.parent_id)
                agent_key = next((key for key, info in chain if info.agent is not None), None)
                if agent_key is not None:
                    self._pending_guardrails.setdefault(agent_key, []).append(item)
            return
        with self._lock:
            call.guardrails.append(item)
            guardrails = list(call.guardrails)
        self._annotate(call, metadata={"guardrails": guardrails})

    # ------------------------------------------------------------------ helpers

    def _annotate(self, call: _Call, *, metadata: dict[str, Any]) -> None:
        self._adapter.annotate(
            CallInfo(response_id=call.response_id, agent=call.agent, metadata=metadata)
        )

    def _ancestors(self, span_id: str | None) -> list[tuple[str, _SpanInfo]]:
        """Open spans from ``span_id`` up to the root, nearest first (caller holds the lock)."""
        chain: list[tuple[str, _SpanInfo]] = []
        while span_id is not None and len(chain) < 64:
            info = self._spans.get(span_id)
            if info is None:
                break
            chain.append((span_id, info))
            span_id = info.parent_id
        return chain

    def _call_above(self, span_id: str | None) -> _Call | None:
        """The latest LLM call recorded under the nearest enclosing turn or agent span."""
        with self._lock:
            for key, _ in self._ancestors(span_id):
                call = self._calls.get(key)
                if call is not None:
                    return call
        return None


def _label(data: object) -> str | None:
    """A span's name in an annotation's path (None: not part of the path)."""
    if isinstance(data, AgentSpanData | TaskSpanData | CustomSpanData):
        return data.name
    if isinstance(data, TurnSpanData):
        return f"turn {data.turn}"
    return None


def _tool_calls(output: object) -> list[tuple[str, str, str]]:
    """``(id, name, arguments)`` of the tool calls in a generation span's output: chat messages
    (``tool_calls``), or, for a streamed call, a Responses-style dump (``function_call`` items).
    """
    found: list[tuple[str, str, str]] = []
    for message in output if isinstance(output, list) else []:
        if not isinstance(message, dict):
            continue
        calls = message.get("tool_calls")
        for item in calls if isinstance(calls, list) else []:
            function = item.get("function") if isinstance(item, dict) else None
            if not isinstance(function, dict):
                continue
            call_id, name = item.get("id"), function.get("name")
            if isinstance(call_id, str) and isinstance(name, str):
                found.append((call_id, name, str(function.get("arguments", ""))))
        items = message.get("output")
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, dict) or item.get("type") != "function_call":
                continue
            call_id, name = item.get("call_id"), item.get("name")
            if isinstance(call_id, str) and isinstance(name, str):
                found.append((call_id, name, str(item.get("arguments", ""))))
    return found
