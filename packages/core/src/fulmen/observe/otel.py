"""OpenTelemetry export of recorded episodes, with the GenAI semantic conventions.

Needs ``opentelemetry-sdk`` and ``opentelemetry-exporter-otlp-proto-http`` (importing this
module without them raises :class:`~fulmen.observe.MissingDependencyError` naming the install).

Each finished episode becomes one trace, timed by the records' own timestamps::

    episode                              fulmen.episode.*, fulmen.task.id, fulmen.reward.*
    ├── chat {model}                     one per LLM call: gen_ai.operation.name = "chat",
    │                                    gen_ai.request.model, gen_ai.usage.input_tokens /
    │                                    output_tokens (exact token counts),
    │                                    gen_ai.response.finish_reasons, gen_ai.agent.name
    └── execute_tool {tool}              one per tool call the model asked for:
                                         gen_ai.tool.name, gen_ai.tool.call.id

Rewards are attributes of the root (``fulmen.reward.outcome`` and ``fulmen.reward.<name>``
sums) and ``fulmen.reward`` events (on the root, and on the call a step reward belongs to).
A tool span runs from the end of the call that asked for it to the start of the call that
received its result (or the episode's end); a tool result that carries an ``error`` marks
the span as failed. Message contents are exported only with ``capture_content=True``
(``gen_ai.input.messages`` / ``gen_ai.output.messages``, tool arguments and results).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fulmen.observe._optional import MissingDependencyError
from fulmen.observe.summary import tool_names
from fulmen.protocol import EpisodeRecord, EpisodeStatus, Reward, Transition

try:
    from opentelemetry import trace
    from opentelemetry.context import Context
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
    from opentelemetry.trace import Span, SpanKind, Status, StatusCode
except ImportError as _exc:  # pragma: no cover - exercised in a subprocess test
    raise MissingDependencyError(
        feature="OpenTelemetry export",
        package="opentelemetry-sdk and opentelemetry-exporter-otlp-proto-http",
        install="pip install 'fulmen[otel]'",
    ) from _exc

__all__ = ["EpisodeSpanExporter", "traces_endpoint"]

_NS = 1_000_000_000
_FAILED = (EpisodeStatus.FAILED, EpisodeStatus.TIMED_OUT)


def traces_endpoint(url: str) -> str:
    """The OTLP/HTTP traces URL for ``url``: a bare ``http://host:port`` gets ``/v1/traces``."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("http", "https") or not rest:
        raise ValueError(
            f"endpoint {url!r}: expected an http(s):// URL such as http://localhost:4318"
        )
    _host, slash, path = rest.partition("/")
    return url.rstrip("/") + "/v1/traces" if not (slash and path.strip("/")) else url


def _ns(seconds: float) -> int:
    return int(seconds * _NS)


class EpisodeSpanExporter:
    """Exports :class:`~fulmen.protocol.EpisodeRecord` values as OpenTelemetry traces.

    Owns a private ``TracerProvider`` (the process's global one is never touched).
    :meth:`export` returns once the spans are handed to the exporter and flushed; export errors
    are logged by the OpenTelemetry SDK, never raised. Not thread-safe.

    Args:
        endpoint: OTLP/HTTP endpoint (``http://localhost:4318`` or a full ``.../v1/traces``
            URL); ignored when ``exporter`` is given.
        exporter: Any OpenTelemetry ``SpanExporter`` (tests pass an in-memory one).
        headers: HTTP headers for the OTLP endpoint (``Authorization`` for Langfuse...).
        service_name: ``service.name`` of the resource.
        capture_content: Also export message contents, tool arguments and tool results.
    """

    def __init__(
        self,
        *,
        endpoint: str | None = None,
        exporter: SpanExporter | None = None,
        headers: Mapping[str, str] | None = None,
        service_name: str = "fulmen",
        capture_content: bool = False,
    ) -> None:
        if exporter is None:
            if endpoint is None:
                raise ValueError("EpisodeSpanExporter: pass endpoint= or exporter=")
            exporter = OTLPSpanExporter(
                endpoint=traces_endpoint(endpoint), headers=dict(headers or {})
            )
        self._provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        self._provider.add_span_processor(BatchSpanProcessor(exporter))
        self._tracer = self._provider.get_tracer("fulmen.observe.otel")
        self.capture_content = capture_content

    def export(self, records: Iterable[EpisodeRecord]) -> int:
        """Export each record as one trace; returns how many were exported (then flushes)."""
        count = 0
        for record in records:
            self._episode(record)
            count += 1
        self._provider.force_flush()
        return count

    def shutdown(self) -> None:
        """Flush and stop the exporter."""
        self._provider.shutdown()

    def _episode(self, record: EpisodeRecord) -> None:
        e = record.episode
        ts = record.transitions
        start = min([e.started_at or e.created_at, *(t.started_at for t in ts if t.started_at)])
        end = max([start, e.finished_at or 0.0, *(t.ended_at for t in ts)])
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.conversation.id": e.id,
            "fulmen.episode.id": e.id,
            "fulmen.episode.status": e.status.value,
            "fulmen.episode.attempt": e.attempt,
            "fulmen.task.id": e.task.id,
            "fulmen.task.split": e.task.split,
        }
        optional = {
            "fulmen.episode.termination": e.termination.value if e.termination else None,
            "fulmen.episode.group_id": e.group_id,
            "fulmen.policy_version": e.policy_version,
        }
        attrs.update({k: v for k, v in optional.items() if v is not None})
        attrs.update(_reward_attributes(record.rewards))
        root = self._tracer.start_span("episode", attributes=attrs, start_time=_ns(start))
        if e.status in _FAILED:
            root.set_attribute("error.type", e.termination.value if e.termination else "error")
            root.set_status(Status(StatusCode.ERROR, e.error or e.status.value))
        for r in record.rewards:
            _reward_event(root, r)
        ctx = trace.set_span_in_context(root)
        for i, t in enumerate(ts):
            self._call(t, ctx, record.rewards)
            self._tools(t, ts[i + 1 :], ctx, end)
        root.end(end_time=_ns(end))

    def _call(self, t: Transition, ctx: Context, rewards: Sequence[Reward]) -> None:
        model = str(t.metadata.get("model") or "unknown")
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": model,
            "gen_ai.response.model": model,
            "gen_ai.response.id": f"chatcmpl-{t.request_id}",
            "gen_ai.usage.input_tokens": len(t.prompt_token_ids),
            "gen_ai.usage.output_tokens": len(t.response_token_ids),
            "fulmen.transition.seq": t.seq,
            "fulmen.request_id": t.request_id,
            "fulmen.trainable": t.trainable,
        }
        if t.finish_reason:
            attrs["gen_ai.response.finish_reasons"] = [t.finish_reason]
        if t.agent:
            attrs["gen_ai.agent.name"] = t.agent
        params: Any = t.metadata.get("params")
        if isinstance(params, Mapping):
            for key in ("temperature", "max_tokens", "top_p", "seed"):
                value: Any = params.get(key)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    attrs[f"gen_ai.request.{key}"] = value
        for key in ("framework", "node"):
            if isinstance(t.metadata.get(key), str):
                attrs[f"fulmen.{key}"] = t.metadata[key]
        if t.policy_version is not None:
            attrs["fulmen.policy_version"] = t.policy_version
        if t.flags:
            attrs["fulmen.flags"] = list(t.flags)
        if self.capture_content:
            attrs["gen_ai.input.messages"] = json.dumps(list(t.request_messages), default=str)
            attrs["gen_ai.output.messages"] = json.dumps([t.response_message], default=str)
        span = self._tracer.start_span(
            f"chat {model}",
            context=ctx,
            kind=SpanKind.CLIENT,
            attributes=attrs,
            start_time=_ns(t.started_at),
        )
        for r in rewards:
            if r.step == t.seq:
                _reward_event(span, r)
        span.end(end_time=_ns(max(t.ended_at, t.started_at)))

    def _tools(self, t: Transition, later: Sequence[Transition], ctx: Context, end: float) -> None:
        results = _tool_results(t, later)
        for call, name in zip(t.tool_calls, tool_names(t), strict=True):
            call_id = str(call.get("id") or "")
            result, received_at = results.get(call_id, (None, None))
            attrs: dict[str, Any] = {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": name,
                "gen_ai.tool.call.id": call_id,
                "gen_ai.tool.type": "function",
                "fulmen.request_id": t.request_id,
            }
            if t.agent:
                attrs["gen_ai.agent.name"] = t.agent
            if self.capture_content:
                function: Any = call.get("function")
                if isinstance(function, Mapping):
                    attrs["gen_ai.tool.call.arguments"] = str(function.get("arguments", ""))
                if result is not None:
                    attrs["gen_ai.tool.call.result"] = str(
                        result.get("output", result.get("content", ""))
                    )
            span = self._tracer.start_span(
                f"execute_tool {name}",
                context=ctx,
                kind=SpanKind.INTERNAL,
                attributes=attrs,
                start_time=_ns(t.ended_at),
            )
            if result is not None and result.get("error"):
                span.set_attribute("error.type", "tool_error")
                span.set_status(Status(StatusCode.ERROR, str(result["error"])))
            finished = received_at if received_at is not None else end
            span.end(end_time=_ns(max(finished, t.ended_at)))


def _tool_results(
    t: Transition, later: Sequence[Transition]
) -> dict[str, tuple[Mapping[str, Any] | None, float | None]]:
    """Per tool-call id: its result (adapter ``tool_results`` first, else the ``tool`` message a
    later call sent) and when a later call sent it (None when none did)."""
    out: dict[str, tuple[Mapping[str, Any] | None, float | None]] = {}
    for nxt in later:
        for m in nxt.request_messages:
            call_id = m.get("tool_call_id")
            if m.get("role") == "tool" and isinstance(call_id, str) and call_id not in out:
                out[call_id] = ({"content": m.get("content")}, nxt.started_at)
    annotated: Any = t.metadata.get("tool_results", ())
    for r in annotated if isinstance(annotated, list | tuple) else ():
        if isinstance(r, Mapping) and isinstance(r.get("tool_call_id"), str):
            call_id = str(r["tool_call_id"])
            out[call_id] = (r, out.get(call_id, (None, None))[1])
    return out


def _reward_attributes(rewards: Sequence[Reward]) -> dict[str, float]:
    """``fulmen.reward.outcome`` (shared episode outcome) and ``fulmen.reward.<name>`` sums."""
    sums: dict[str, float] = {}
    for r in rewards:
        if r.step is not None or r.agent is not None:
            continue  # step and per-agent rewards are events only
        key = f"fulmen.reward.{r.name or 'outcome'}"
        sums[key] = sums.get(key, 0.0) + r.value
    return sums


def _reward_event(span: Span, r: Reward) -> None:
    attrs: dict[str, Any] = {"fulmen.reward.value": r.value}
    if r.name is not None:
        attrs["fulmen.reward.name"] = r.name
    if r.step is not None:
        attrs["fulmen.reward.step"] = r.step
    if r.agent is not None:
        attrs["fulmen.reward.agent"] = r.agent
    span.add_event("fulmen.reward", attributes=attrs, timestamp=_ns(r.created_at))
