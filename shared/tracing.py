"""OpenTelemetry set-up, and W3C trace context in bus headers.

Every process calls `setup_tracing` once. With an OTLP endpoint (config or
OTEL_EXPORTER_OTLP_ENDPOINT) spans go there over OTLP/HTTP; without one they go to a
bounded JSON-lines file per service under the host's state dir, so `weave trace` can
read a host's recent traces with no collector running. Each span is one handled
message or timer tick (STYLE.md 13).
"""
from __future__ import annotations

import asyncio
import json
import os
import threading
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util._once import Once

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


class QuietBatchSpanProcessor(SpanProcessor):
    """Batches finished spans to an exporter on a thread of its own that sleeps until a
    span arrives: no wake-up at all while a service is idle (OpenTelemetry's
    BatchSpanProcessor wakes every `schedule_delay` whether or not there is work).

    After the first span of a batch it waits `delay_s` for more, then exports them in one
    call. The queue is bounded (`max_queue`): past it spans are dropped and counted, so
    tracing never holds up or grows a service. Shutdown exports what is queued.

    With `on_loop` (an exporter whose export is a short local write, the JSON-lines file)
    a batch whose spans end in a thread running an asyncio loop is exported by a timer
    on that loop instead, and the thread is never started: a service runs no thread for
    tracing and wakes once a batch (its memory: within noise, issue 15's tenth round). A
    span ending in another thread (an executor's) is handed to the loop that last took
    one while that loop runs; one ending where no loop is running at all goes to the
    thread, started then."""

    def __init__(self, exporter: SpanExporter, *, delay_s: float = 0.5, max_queue: int = 2048,
                 max_batch: int = 512, on_loop: bool = False) -> None:
        self.exporter, self.delay_s, self.max_queue, self.max_batch = exporter, delay_s, max_queue, max_batch
        self.on_loop = on_loop
        self.dropped = 0
        self._queue: list[ReadableSpan] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._flush_waiters: list[threading.Event] = []
        self._thread: threading.Thread | None = None
        """Started with the first span, in whichever process records it."""
        self._loop: asyncio.AbstractEventLoop | None = None
        """The loop that last took a span (on_loop), and whether its export timer is set."""
        self._armed = False
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._forget_in_child)

    def _forget_in_child(self) -> None:
        """A forked process has no copy of our thread, and our lock may have been held
        at the fork: start afresh (empty queue), with a thread only if this process
        records a span here (a service forked from the supervisor records its own). The
        supervisor's loop is not the child's: its timer is forgotten with it."""
        self._cond = threading.Condition()
        self._queue, self._flush_waiters = [], []
        self._thread = None
        self._loop, self._armed = None, False

    def _ensure_thread(self) -> None:
        if self._thread is None:
            with self._cond:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="span-export", daemon=True)
                    self._thread.start()

    @property
    def native_id(self) -> int | None:
        """The export thread's kernel id (its wake-ups are counted in /proc)."""
        return self._thread.native_id if self._thread else None

    def on_start(self, span, parent_context=None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        if not span.context.trace_flags.sampled:
            return
        if self.on_loop and self._queue_on_loop(span):
            return
        self._ensure_thread()
        with self._cond:
            if self._enqueue(span) and len(self._queue) == 1:
                self._cond.notify()

    def _enqueue(self, span: ReadableSpan) -> bool:
        """Queue `span` (holding the lock), or drop and count it past `max_queue`."""
        if len(self._queue) >= self.max_queue:
            self.dropped += 1
            return False
        self._queue.append(span)
        return True

    def _queue_on_loop(self, span: ReadableSpan) -> bool:
        """Queue `span` for a loop's timer; False if no loop can take it."""
        here = asyncio._get_running_loop()
        with self._cond:
            loop = here if here is not None else self._loop
            if loop is None or loop.is_closed() or (here is None and not loop.is_running()):
                return False
            if not self._enqueue(span) or (self._armed and loop is self._loop):
                return True
            self._loop, self._armed = loop, True
        if here is not None:
            loop.call_later(self.delay_s, self._export_queued)
            return True
        try:
            loop.call_soon_threadsafe(loop.call_later, self.delay_s, self._export_queued)
        except RuntimeError:  # it closed just now: what is queued goes out at the next span or shutdown
            with self._cond:
                self._armed = False
        return True

    def _export_queued(self) -> None:
        with self._cond:
            batch, self._queue = self._queue, []
            self._armed = False
        self._export(batch)

    def _export(self, batch: list[ReadableSpan]) -> None:
        for i in range(0, len(batch), self.max_batch):
            try:
                self.exporter.export(batch[i:i + self.max_batch])
            except Exception:  # an exporter must never take the service down
                pass

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping and not self._flush_waiters:
                    self._cond.wait()  # asleep while idle: no timeout
                if not (self._stopping or self._flush_waiters):
                    self._cond.wait(self.delay_s)  # gather the rest of the batch
                batch, self._queue = self._queue, []
                waiters, self._flush_waiters = self._flush_waiters, []
                stopping = self._stopping
            self._export(batch)
            for event in waiters:
                event.set()
            if stopping:
                return

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        if self._thread is None:
            if self.on_loop:
                self._export_queued()  # here and now: what a loop's timer would have done
            return True
        done = threading.Event()
        with self._cond:
            self._flush_waiters.append(done)
            self._cond.notify()
        return done.wait(timeout_millis / 1000)

    def shutdown(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(5.0)
        self._export_queued()  # what waited for a loop's timer (the thread took what it had)
        self.exporter.shutdown()


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
    """Install the global tracer provider for this process and return it.

    Two things here matter to the services forked from the supervisor (issue 15): the
    resource is made without `Resource.create`'s thread pool (a thread started and
    joined in every process, for two detectors that only read the environment), and
    one tracer is asked for at once, which compiles the regular expressions of the
    SDK's warnings filter into re's cache before the forks, not in each service."""
    provider = TracerProvider(resource=resource({"service.name": f"weave-{service}", "host.name": host}))
    endpoint = endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(QuietBatchSpanProcessor(
            OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces"), delay_s=1.0))
    elif trace_dir is not None:
        exporter = JsonLinesSpanExporter(Path(trace_dir) / f"{service}.jsonl")
        provider.add_span_processor(QuietBatchSpanProcessor(exporter, delay_s=0.5, on_loop=True))
    trace.set_tracer_provider(provider)
    provider.get_tracer("weave.setup")
    return provider


def resource(attributes: dict[str, str]) -> Resource:
    """What `Resource.create(attributes)` makes with its default detectors (the SDK's
    own attributes, a service.instance.id, OTEL_RESOURCE_ATTRIBUTES and
    OTEL_SERVICE_NAME), run in this thread. Detectors configured by
    OTEL_EXPERIMENTAL_RESOURCE_DETECTORS go through `Resource.create` as before."""
    from opentelemetry.sdk.resources import (_DEFAULT_RESOURCE, OTEL_EXPERIMENTAL_RESOURCE_DETECTORS,
                                             OTELResourceDetector, ServiceInstanceIdResourceDetector)

    if os.environ.get(OTEL_EXPERIMENTAL_RESOURCE_DETECTORS, "").strip():
        return Resource.create(attributes)
    merged = _DEFAULT_RESOURCE  # (tests/unit/test_tracing_setup.py holds this equal to Resource.create's)
    for detector in (ServiceInstanceIdResourceDetector(), OTELResourceDetector()):
        merged = merged.merge(detector.detect())
    return merged.merge(Resource(attributes))


def forget_tracer_provider() -> None:
    """In a process forked from one that installed its tracer provider (a service forked
    by the supervisor): forget it, so that this process's `setup_tracing` installs its
    own (OpenTelemetry lets a process set the global provider once)."""
    trace._TRACER_PROVIDER = None
    trace._TRACER_PROVIDER_SET_ONCE = Once()


def read_spans(trace_dir: Path) -> Iterator[dict]:
    """Every span recorded in a host's trace dir (rotated files first)."""
    for path in sorted(Path(trace_dir).glob("*.jsonl*"), key=lambda p: (not p.name.endswith(".1"), p.name)):
        with open(path) as f:
            for line in f:
                try:
                    yield json.loads(line)
                except ValueError:
                    continue  # a line cut by rotation or a crash
