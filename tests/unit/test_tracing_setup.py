"""shared/tracing.py setup_tracing: the resource Resource.create would make, without its
thread pool; the SDK's warnings-filter regexes compiled before a fork, not after; and a
failed bus request traced without a stack trace (issue 15: what each forked service
would otherwise run, and keep, for itself)."""
from __future__ import annotations

import subprocess
import sys

import pytest
from opentelemetry.sdk.resources import Resource

from shared import tracing
from shared.bus import BusError, MemoryBroker, MemoryBus
from shared.schemas import HealthReply, HealthRequest


def test_the_resource_is_resource_creates(monkeypatch):
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test,team=net")
    attrs = {"service.name": "weave-ipam", "host.name": "h1"}
    ours, theirs = dict(tracing.resource(attrs).attributes), dict(Resource.create(attrs).attributes)
    assert ours == theirs and ours["team"] == "net" and ours["service.name"] == "weave-ipam"
    assert ours["service.instance.id"]  # (one per process, the same from either)


def test_no_thread_is_started_for_the_resource(monkeypatch):
    import concurrent.futures

    def refuse(*a, **kw):
        raise AssertionError("a thread pool was made")

    monkeypatch.setattr(concurrent.futures, "ThreadPoolExecutor", refuse)
    assert tracing.resource({"service.name": "weave-dns"}).attributes["service.name"] == "weave-dns"


PROBE = """
import re, tempfile
from shared import tracing
tracing.setup_tracing("supervisor", host="h", trace_dir=tempfile.mkdtemp())
compiled = []
original = re._compiler.compile
re._compiler.compile = lambda *a, **kw: (compiled.append(a[0]), original(*a, **kw))[1]
tracing.forget_tracer_provider()  # as a forked service does
tracing.setup_tracing("ipam", host="h", trace_dir=tempfile.mkdtemp())
tracing.tracer("weave.ipam.bus")
print(compiled)
"""


def test_a_service_set_up_after_the_supervisor_compiles_no_regular_expression():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.asyncio
async def test_a_failed_request_is_traced_without_a_stack_trace(monkeypatch):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    monkeypatch.setattr("opentelemetry.trace.get_tracer", lambda name, *a, **kw: provider.get_tracer(name))
    bus = MemoryBus(MemoryBroker(), "cli")
    with pytest.raises(BusError, match="unavailable"):
        await bus.request("weave.ipam.status", HealthRequest(), HealthReply)
    [span] = spans.get_finished_spans()
    [event] = span.events
    assert event.name == "exception" and event.attributes["exception.type"] == "BusError"
    assert "unavailable" in event.attributes["exception.message"]
    assert "exception.stacktrace" not in event.attributes
    assert not span.status.is_ok
