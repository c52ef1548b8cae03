"""The span processor of every service: batches spans, exports them, and does not wake
at all while no span arrives (issue 15: idle means asleep)."""
from __future__ import annotations

import asyncio
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


def make_on_loop(delay_s: float = 0.05, **kw):
    return make(delay_s, on_loop=True, **kw)


async def exported(rec: Recorder, spans: int, timeout: float = 2.0) -> None:
    """Until `spans` spans went out (the loop's timer ran), or fail at `timeout`."""
    deadline = time.monotonic() + timeout
    while sum(map(len, rec.batches)) < spans:
        assert time.monotonic() < deadline, rec.batches
        await asyncio.sleep(0.005)


def test_on_loop_a_batch_is_exported_by_the_loop_and_no_thread_is_started():
    rec, proc, tracer, provider = make_on_loop()
    threads = threading.active_count()

    async def main():
        loop = asyncio.get_running_loop()
        for i in range(3):
            with tracer.start_as_current_span(f"s{i}"):
                pass
        timers = len(loop._scheduled)
        await exported(rec, 3)
        return timers, len(loop._scheduled)

    armed, after = asyncio.run(main())
    assert rec.batches == [["s0", "s1", "s2"]]  # one timer, one batch
    assert armed == 1 and after == 0  # nothing left on the loop: asleep while idle
    assert proc.native_id is None and threading.active_count() == threads
    provider.shutdown()


def test_on_loop_a_span_ending_in_an_executor_thread_goes_through_the_loop():
    rec, proc, tracer, provider = make_on_loop()

    def blocking():
        with tracer.start_as_current_span("in-executor"):
            pass
        return threading.get_ident()

    async def main():
        with tracer.start_as_current_span("on-loop"):
            pass
        worker = await asyncio.get_running_loop().run_in_executor(None, blocking)
        await exported(rec, 2)
        return worker

    worker = asyncio.run(main())
    assert worker != threading.get_ident()
    assert rec.batches == [["on-loop", "in-executor"]] and proc.native_id is None
    provider.shutdown()


def test_on_loop_spans_left_by_a_closed_loop_go_out_with_the_next_loop_or_shutdown():
    rec, proc, tracer, provider = make_on_loop(delay_s=30.0)

    async def one(name):
        with tracer.start_as_current_span(name):
            pass

    asyncio.run(one("first"))  # its loop closes before its timer fires
    assert rec.batches == []
    proc.delay_s = 0.01
    async def second():
        await one("second")
        await exported(rec, 2)

    asyncio.run(second())
    assert rec.batches == [["first", "second"]]  # armed again on the new loop
    asyncio.run(one("third"))
    with tracer.start_as_current_span("no-loop"):  # no loop running anywhere: the thread takes it
        pass
    provider.shutdown()
    assert sorted(sum(rec.batches[1:], [])) == ["no-loop", "third"]


def test_on_loop_flush_exports_at_once_and_the_queue_is_bounded():
    rec, proc, tracer, provider = make_on_loop(delay_s=30.0, max_queue=3)

    async def main():
        for i in range(5):
            with tracer.start_as_current_span(f"s{i}"):
                pass
        assert proc.force_flush(5000)

    asyncio.run(main())
    assert rec.batches == [["s0", "s1", "s2"]] and proc.dropped == 2
    provider.shutdown()
