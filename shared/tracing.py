"""OpenTelemetry set-up, and W3C trace context in bus headers.

Every process calls `setup_tracing` once. With an OTLP endpoint (config or
OTEL_EXPORTER_OTLP_ENDPOINT) spans go there over OTLP/HTTP; without one they go to a
bounded JSON-lines file per service under the host's state dir, so `weave trace` can
read a host's recent traces with no collector running. Each span is one handled
message or timer tick (STYLE.md 13).
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()
TRACE_FILE_MAX_BYTES = 4 * 1024 * 1024  # per service; one rotated file kept beside it


def inject(headers: dict[str, str] | None = None) -> dict[str, str]:
    """Return `headers` with the current span's `traceparent` (and `tracestate`) added."""
    carrier = dict(headers or {})
    _PROPAGATOR.inject(carrier)
    return carrier


def extract(headers: Mapping[str, str] | None) -> otel_context.Context:
    """The remote parent context carried in bus headers (empty context if none)."""
    return _PROPAGATOR.extract(dict(headers or {}))


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


class JsonLinesSpanExporter(SpanExporter):
    """Writes finished spans as JSON lines; rotates at `max_bytes` (keeps one old file).

    Bounded on purpose: tracing must never fill a host's disk.
    """

    def __init__(self, path: Path, max_bytes: int = TRACE_FILE_MAX_BYTES) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(span_to_dict(s), separators=(",", ":")) + "\n" for s in spans)
        with self._lock:
            try:
                if self.path.exists() and self.path.stat().st_size > self.max_bytes:
                    os.replace(self.path, self.path.with_suffix(self.path.suffix + ".1"))
                with open(self.path, "a") as f:
                    f.write(lines)
            except OSError:
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:  # nothing held open between exports
        pass


def span_to_dict(span: ReadableSpan) -> dict:
    ctx = span.get_span_context()
    parent = span.parent
    return {
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "parent_id": f"{parent.span_id:016x}" if parent else None,
        "name": span.name,
        "service": span.resource.attributes.get("service.name", ""),
        "host": span.resource.attributes.get("host.name", ""),
        "kind": span.kind.name,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "attributes": {k: v if isinstance(v, (str, int, float, bool)) else str(v)
                       for k, v in (span.attributes or {}).items()},
    }


def setup_tracing(service: str, *, host: str, trace_dir: Path | None = None,
                  endpoint: str | None = None) -> TracerProvider:
    """Install the global tracer provider for this process and return it."""
    provider = TracerProvider(resource=Resource.create({"service.name": f"weave-{service}", "host.name": host}))
    endpoint = endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")))
    elif trace_dir is not None:
        exporter = JsonLinesSpanExporter(Path(trace_dir) / f"{service}.jsonl")
        provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=2048, schedule_delay_millis=500))
    trace.set_tracer_provider(provider)
    return provider


def read_spans(trace_dir: Path) -> Iterator[dict]:
    """Every span recorded in a host's trace dir (rotated files first)."""
    for path in sorted(Path(trace_dir).glob("*.jsonl*"), key=lambda p: (not p.name.endswith(".1"), p.name)):
        with open(path) as f:
            for line in f:
                try:
                    yield json.loads(line)
                except ValueError:
                    continue  # a line cut by rotation or a crash
