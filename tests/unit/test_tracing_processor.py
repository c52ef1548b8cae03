"""The span processor of every service: batches spans, exports them, and does not wake
at all while no span arrives (issue 15: idle means asleep)."""
from __future__ import annotations

import threading
import time
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from shared.tracing import QuietBatchSpanProcessor


class Recorder(SpanExporter):
    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.got = threading.Event()

    def export(self, spans) -> SpanExportResult:
        self.batches.append([s.name for s in spans])
        self.got.set()
        return SpanExportResult.SUCCESS


def switches(native_id: int) -> int:
    status = Path(f"/proc/self/task/{native_id}/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("voluntary_ctxt_switches"))


def make(delay_s: float = 0.05, **kw):
    rec = Recorder()
    proc = QuietBatchSpanProcessor(rec, delay_s=delay_s, **kw)
    provider = TracerProvider()
    provider.add_span_processor(proc)
    return rec, proc, provider.get_tracer("t"), provider


def test_spans_of_a_burst_go_out_in_one_batch():
    rec, proc, tracer, provider = make()
    for i in range(5):
        with tracer.start_as_current_span(f"s{i}"):
            pass
    assert rec.got.wait(2)
    time.sleep(0.1)
    assert rec.batches == [["s0", "s1", "s2", "s3", "s4"]]
    provider.shutdown()


def test_an_idle_processor_does_not_wake():
    rec, proc, tracer, provider = make(delay_s=0.01)
    with tracer.start_as_current_span("one"):
        pass
    assert rec.got.wait(2)
    time.sleep(0.05)
    before = switches(proc.native_id)
    time.sleep(0.5)
    assert switches(proc.native_id) == before, "the export thread woke with nothing to do"
    assert len(rec.batches) == 1
    provider.shutdown()


def test_flush_and_shutdown_export_at_once_and_the_queue_is_bounded():
    rec, proc, tracer, provider = make(delay_s=30.0, max_queue=3)
    for i in range(5):
        with tracer.start_as_current_span(f"s{i}"):
            pass
    started = time.monotonic()
    assert proc.force_flush(5000) and time.monotonic() - started < 2.0
    assert rec.batches == [["s0", "s1", "s2"]] and proc.dropped == 2
    with tracer.start_as_current_span("last"):
        pass
    provider.shutdown()
    assert rec.batches[-1] == ["last"]
