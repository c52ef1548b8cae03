"""What the app's inputs (HTTP POSTs, the local bus, the mesh) and readers (the HTTP API,
websockets) share: the collector, the clock, the config, and the app's metrics.

Where a peer's bytes enter (`take_body`, `take_probe_report`), a bad body raises
`RemoteProtocolError` and changes nothing: the shell answers 400 or logs and drops it.
`changed` wakes websockets when a probe asks for it (a report with Scope's Shortcut).
"""
from __future__ import annotations

import asyncio
import logging
import time
import weakref

from shared.prom import CollectorRegistry, Counter, Gauge, Histogram

from services.scope.app.collector import Collector
from services.scope.app.config import AppConfig
from services.scope.app.controls import ControlRouter
from services.scope.app.pipes import PipeRouter
from services.scope.app.traces import TraceIndex
from services.scope.app.render.api import ReportRender
from services.scope.codec import decode_report
from services.scope.report import Report
from shared.clock import Clock
from shared.schemas.scope import ProbeReport

log = logging.getLogger("weave.scope.app")


class AppState:
    def __init__(self, config: AppConfig, clock: Clock, registry: CollectorRegistry) -> None:
        self.config, self.clock = config, clock
        self.collector = Collector(config.settings.window_s)
        self.websockets: weakref.WeakSet = weakref.WeakSet()
        """Every open websocket (topologies, probes' controls, pipes): closed at stop, so
        a stopping app does not wait for its clients to leave."""
        self.controls = ControlRouter(self.websockets)
        self.pipes = PipeRouter(config.settings.max_pipes, config.settings.pipe_connect_timeout_s, self.websockets)
        self.traces = TraceIndex(config.trace_dir)
        self._changed = asyncio.Event()
        self.reports = Counter("scope_app_reports_total", "Probe reports taken, by how they came.",
                               ["source"], registry=registry)
        self.rejected = Counter("scope_app_reports_rejected_total", "Probe reports refused, by reason.",
                                ["source", "reason"], registry=registry)
        self.render_seconds = Histogram("scope_app_render_seconds", "Time to render one API answer.",
                                        ["what"], registry=registry,
                                        buckets=(0.001, 0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.open_websockets = 0
        Gauge("scope_app_websockets", "Open topology websockets.", registry=registry).set_function(
            lambda: self.open_websockets)
        Gauge("scope_app_probes", "Probes with a report in the window.", registry=registry).set_function(
            lambda: len(self.collector.probes(self.clock.monotonic())))

    # -- inputs --------------------------------------------------------------------------
    def take_body(self, body: bytes, content_type: str | None, content_encoding: str | None, *,
                  source: str, probe_id: str, host: str = "", version: str = "") -> Report:
        """Decode a `POST /api/report`-style body and add it (RemoteProtocolError if bad)."""
        report = decode_report(body, content_type, content_encoding)
        self.add(report, source=source, probe_id=probe_id, host=host, version=version)
        return report

    def take_probe_report(self, message: ProbeReport, source: str) -> Report:
        return self.take_body(message.body, "application/msgpack", "gzip", source=source,
                              probe_id=message.probe_id, host=message.host, version=message.probe_version)

    def add(self, report: Report, *, source: str, probe_id: str, host: str = "", version: str = "") -> None:
        self.collector.add(report, self.clock.monotonic(), probe_id, host, version)
        self.reports.labels(source).inc()
        if report.shortcut:
            self._changed.set()
            self._changed = asyncio.Event()

    # -- readers -------------------------------------------------------------------------
    def control_offered(self, probe_id: str) -> bool:
        """Whether this app can run a control of that probe's nodes now."""
        return self.config.controls and self.controls.connected(probe_id)

    def render(self) -> ReportRender:
        return self.collector.render(self.clock.monotonic())

    def report(self) -> Report:
        return self.collector.report(self.clock.monotonic())

    async def wait_changed(self, timeout_s: float) -> None:
        """Return after `timeout_s`, or sooner when a shortcut report arrives."""
        try:
            await asyncio.wait_for(self._changed.wait(), timeout_s)
        except asyncio.TimeoutError:
            pass

    def timed(self, what: str, fn, *args):
        """fn(*args), its duration observed as `scope_app_render_seconds{what}`."""
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.render_seconds.labels(what).observe(time.perf_counter() - start)
