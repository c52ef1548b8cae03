"""The common shell of every service process.

`run_service(name, app)` does what every service needs and nothing protocol-specific:
read the launch config, set up logging and tracing, join the bus (retrying until the
bus is up: no start-order coupling), answer `weave.<name>.health`, serve /metrics and
/healthz, start the app, and stop it cleanly on SIGTERM/SIGINT. The app is a small
object with `start(ctx)`, `stop()` and `health()`; everything else is its own.
"""
from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Callable, Protocol

from shared.prom import CollectorRegistry

from shared import subjects
from shared.bus import Bus
from shared.clock import Clock, RealClock
from shared.config import LaunchConfig, ServiceConfig, for_service, state_dir_from_env
from shared.http import HttpRouter, HttpServer
from shared.memory import TrimmingExecutor, fix_mmap_threshold
from shared.metrics import metrics_router, new_registry
from shared.schemas import HealthReply, HealthRequest
from shared.tracing import setup_tracing

log = logging.getLogger(__name__)


@dataclass
class ServiceContext:
    """What a service app gets from its shell."""

    name: str
    config: ServiceConfig
    bus: Bus
    registry: CollectorRegistry
    clock: Clock
    http: HttpRouter
    """The service's loopback status server (/metrics, /healthz); apps may add routes."""


class ServiceApp(Protocol):
    async def start(self, ctx: ServiceContext) -> None:
        """Register handlers and start work. Must return (spawn tasks for long work)."""

    async def stop(self) -> None:
        """Release what start() took. Called once, on shutdown."""

    def health(self) -> tuple[bool, str]:
        """(healthy, detail). Cheap: called for every health request."""


class IdleApp:
    """A service whose own work has not been built yet: it joins the bus and is healthy."""

    def __init__(self, detail: str = "running") -> None:
        self.detail = detail

    async def start(self, ctx: ServiceContext) -> None:
        pass

    async def stop(self) -> None:
        pass

    def health(self) -> tuple[bool, str]:
        return True, self.detail


class ServiceRunner:
    def __init__(self, app: ServiceApp, config: ServiceConfig, bus: Bus, clock: Clock | None = None) -> None:
        self.name, self.app, self.config, self.bus = config.service, app, config, bus
        self.clock = clock or RealClock()
        self.registry = new_registry()
        self.started_mono = time.monotonic()
        self.metrics_port = 0

    async def start(self) -> None:
        router = metrics_router(self.registry, self.app.health)
        self._http = HttpServer(router, "127.0.0.1", self.config.metrics_port)
        self.metrics_port = await self._http.start()
        await self.bus.serve(subjects.health(self.name), HealthRequest, self._on_health)
        ctx = ServiceContext(self.name, self.config, self.bus, self.registry, self.clock, router)
        await self.app.start(ctx)
        log.info("%s started (pid %d, metrics on 127.0.0.1:%d)", self.name, os.getpid(), self.metrics_port)

    async def stop(self) -> None:
        try:
            await self.app.stop()
        finally:
            await self._http.stop()
            await self.bus.close()

    async def _on_health(self, _: HealthRequest) -> HealthReply:
        healthy, detail = self.app.health()
        return HealthReply(service=self.name, pid=os.getpid(), healthy=healthy, detail=detail,
                           uptime_s=time.monotonic() - self.started_mono, metrics_port=self.metrics_port)


def setup_logging(name: str) -> None:
    """What logging.basicConfig does (a stderr handler with our format, unless the root
    logger has handlers), but the level is set only if it changes: Logger.setLevel
    clears every logger's cache, touching all of a process's loggers, which in a service
    forked from the supervisor (already at that level) copies their pages (issue 15)."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s {name}[%(process)d] %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    level = os.environ.get("WEAVE_LOG_LEVEL", "INFO").upper()
    if logging.getLevelName(root.level) != level:
        root.setLevel(level)


async def _serve_forever(name: str, app: ServiceApp) -> None:
    from shared.nats_bus import NatsBus

    asyncio.get_running_loop().set_default_executor(TrimmingExecutor(asyncio.get_running_loop()))
    launch = LaunchConfig.load(state_dir_from_env())
    config = for_service(name, launch)
    setup_tracing(name, host=launch.nickname, trace_dir=launch.trace_dir, endpoint=launch.otlp_endpoint)
    bus = await NatsBus.connect(launch.bus_url, launch.bus_token(), name, timeout=30.0)
    runner = ServiceRunner(app, config, bus)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await runner.start()
    await stop.wait()
    log.info("%s stopping", name)
    await runner.stop()


def _trace_allocations() -> None:
    import tracemalloc

    tracemalloc.start(12)
    last = [tracemalloc.take_snapshot()]

    def dump(*_) -> None:
        now = tracemalloc.take_snapshot()
        top = now.compare_to(last[0], "traceback")[:8]
        log.warning("allocations grown since the last dump:\n%s", "\n\n".join(
            f"{s.size_diff / 1024:+.1f} KiB, {s.count_diff:+d} blocks:\n" + "\n".join(s.traceback.format())
            for s in top))
        last[0] = now
    signal.signal(signal.SIGUSR2, dump)


def run_service(name: str, app_factory: Callable[[], ServiceApp]) -> None:
    """Entry point body of `weave-<name>`: run until SIGTERM. Exits 1 on a start failure.

    SIGUSR1 dumps every thread's stack to the log (for a service that seems stuck).
    With WEAVE_TRACEMALLOC=1, SIGUSR2 logs the 8 call stacks whose allocations grew most
    since the previous SIGUSR2 (for a service whose memory grows).
    """
    setup_logging(name)
    fix_mmap_threshold()  # (a forked service has it from the supervisor already; compose's do not)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    if os.environ.get("WEAVE_TRACEMALLOC") == "1":
        _trace_allocations()
    try:
        asyncio.run(_serve_forever(name, app_factory()))
    except Exception as exc:
        log.error("%s failed: %s", name, exc, exc_info=True)
        sys.exit(1)
