"""A real OTLP/HTTP trace receiver for tests: an aiohttp server on 127.0.0.1 that decodes the
``ExportTraceServiceRequest`` protobuf (the OTLP wire format) and keeps the spans."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

__all__ = ["OtlpReceiver", "Spans", "attrs", "by_episode"]

Spans = list[tuple[dict[str, Any], Span]]
"""Received spans with their resource attributes."""


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def attrs(kvs: Any) -> dict[str, Any]:
    """Decoded OTLP attributes."""
    return {kv.key: _value(kv.value) for kv in kvs}


class OtlpReceiver:
    """A minimal OTLP/HTTP trace receiver (``POST /v1/traces``, protobuf) on 127.0.0.1."""

    def __init__(self) -> None:
        self.spans: Spans = []
        self.requests = 0
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self.port = 0

    async def _traces(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        self.requests += 1
        for rs in message.resource_spans:
            resource = attrs(rs.resource.attributes)
            for ss in rs.scope_spans:
                self.spans.extend((resource, span) for span in ss.spans)
        body = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=body, content_type="application/x-protobuf")

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = runner.addresses[0][1]
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def by_episode(spans: Spans) -> dict[str, list[Span]]:
    """Per episode id: its root span, then the root's children."""
    roots = {s.span_id: s for _, s in spans if not s.parent_span_id}
    out: dict[str, list[Span]] = {}
    for root in roots.values():
        episode = attrs(root.attributes)["fulmen.episode.id"]
        out[episode] = [root, *(s for _, s in spans if s.parent_span_id == root.span_id)]
    return out
