"""Libraries imported without what we never run (shared/imports.py, shared/prom.py):
the modules left out stay out of a service's imports, what is left works as the whole
library does, and the whole library is still there for who asks. (The bus client is
our own, shared/nats_client.py: no service imports nats-py.)"""
from __future__ import annotations

import json
import subprocess
import sys

import prometheus_client
import pytest
from prometheus_client.exposition import generate_latest as their_generate_latest
from prometheus_client.metrics import Enum, Info

from shared import prom

LEFT_OUT = ("importlib.metadata", "email.parser", "http.server", "urllib.request", "mimetypes",
            "prometheus_client.exposition", "nats", "aiohttp")

PROBE = """
import json, sys
import shared.service, shared.nats_bus, shared.schemas, shared.prom
import pydantic.plugin._schema_validator as sv, pydantic.plugin._loader as loader
out = {"loaded": [m for m in %r if m in sys.modules], "plugins": list(loader.get_plugins())}
print(json.dumps(out))
""" % (LEFT_OUT,)


def test_a_service_imports_none_of_what_it_never_runs_and_the_rest_is_whole():
    run = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["loaded"] == []
    assert out["plugins"] == []


def _registry() -> prom.CollectorRegistry:
    reg = prom.CollectorRegistry()
    requests = prom.Counter("weave_requests", "Requests.\nWith a second line and a \\ backslash.",
                            ["verb", "peer"], registry=reg)
    requests.labels("GET", 'say "hi"\n\\').inc(3)
    requests.labels("PUT", "").inc(0.5)
    prom.Gauge("weave_ips", "Addresses.", registry=reg).set(1e-7)
    hist = prom.Histogram("weave_latency_seconds", "Latency.", buckets=(0.001, 0.5, 1234567.0), registry=reg)
    hist.observe(0.2)
    hist.observe(float("inf"))
    prom.Summary("weave_size_bytes", "Sizes.", registry=reg).observe(12345678901)
    Info("weave_build", "Build.", registry=reg).info({"version": "2.8.1"})
    Enum("weave_state", "State.", states=["ready", "down"], registry=reg).state("down")

    class Custom(prom.Collector):
        def collect(self):
            g = prom.GaugeMetricFamily("weave_peer_seen", "Seen.", labels=["9bad"])
            g.add_metric(["x"], float("nan"), timestamp=1700000000.25)
            yield g
            c = prom.CounterMetricFamily("weave.bad-name", "Dots and dashes.")
            c.add_metric([], 2)
            yield c

    reg.register(Custom())
    return reg


def test_the_text_exposition_is_prometheus_clients_own():
    reg = _registry()
    ours = prom.generate_latest(reg).decode()
    assert ours == their_generate_latest(reg).decode()
    assert 'weave_requests_total{peer="say \\"hi\\"\\n\\\\",verb="GET"} 3.0' in ours
    assert "# TYPE weave_build_info gauge" in ours and "weave_peer_seen{_bad=\"x\"} NaN 1700000000250" in ours
    assert "weave_bad_name_total 2.0" in ours


def test_the_content_type_is_the_text_format_weave_nets_router_serves():
    assert prom.CONTENT_TYPE == prometheus_client.CONTENT_TYPE_PLAIN_0_0_4


@pytest.mark.parametrize("name", ["Counter", "CollectorRegistry", "GaugeMetricFamily", "ProcessCollector"])
def test_the_classes_are_prometheus_clients_own(name):
    import prometheus_client.core

    theirs = getattr(prometheus_client, name, None) or getattr(prometheus_client.core, name)
    assert getattr(prom, name) is theirs
