"""The `scope-probe` service (asyncio shell): Weave Scope's probe for this host.

One timer task runs the core's `Schedule`: every second a spy (the /proc reads in a
thread, `sources.read_local`; conntrack's flows; what the other services last said,
`sources.Remote`) goes into the `Probe` core; every 3 s the core's report (full every
third time, a delta otherwise) is encoded once (gzip + msgpack, Scope's POST body) and
- published on the local bus as a `ProbeReport` (`weave.events.scope-report`) for this
  host's app,
- broadcast on the mesh channel `weave-py-scope` (`encode_mesh`) for every other
  host's app,
- offered to each `--scope-target` app (app_client.py; never waited for).
Controls: a control websocket to this host's app and to each `--scope-target` app
(control_client.py) serves their controls (controls.py), refused unless this host was
launched with `--scope-controls`.
A failure to publish on the bus makes the next report full (Scope's rule). Conntrack is
followed by a second task when this namespace has conntrack events; without them,
connections come from /proc alone. `weave.scope-probe.status` answers what it costs.
"""
from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import secrets
import time

import aiohttp
from shared.prom import Counter, CounterMetricFamily, Gauge, Summary

from services.scope.codec import encode_report
from services.scope.probe.app_client import AppClient, report_headers
from services.scope.probe.conntrack import ConntrackSocket, FlowTracker, events_supported
from services.scope.probe.container import attached
from services.scope.probe.control_client import ControlClient, local_app_target
from services.scope.probe.controls import Controls
from services.scope.probe.docker_source import DockerSource
from services.scope.probe.host import LocalNetworks
from services.scope.probe.probe import Probe, Publication, Schedule, SpyInputs
from services.scope.probe.sources import WEAVE_REPORT_URL, Remote, read_local
from services.scope.probe.walker import ProcWalker
from shared import subjects
from shared.config import ScopeProbeSettings
from shared.mesh_channel import MeshChannel
from shared.schemas.mesh import MeshReceive
from shared.schemas.scope import (REPORT_TOPIC, SCOPE_CHANNEL, ProbeReport, ProbeStatusReply, ProbeStatusRequest,
                                  encode_mesh)
from shared.service import ServiceContext, run_service

log = logging.getLogger("weave.scope.probe")
NAME = "scope-probe"


def probe_version() -> str:
    """X-Scope-Probe-Version: ours, as `weave-py-<version>` (Scope's is a git hash)."""
    try:
        return f"weave-py-{importlib.metadata.version('weave-py')}"
    except importlib.metadata.PackageNotFoundError:
        return "weave-py-dev"


class ProbeApp:
    def __init__(self, settings: ScopeProbeSettings | None = None, proc_root: str = "/proc",
                 weave_url: str = WEAVE_REPORT_URL) -> None:
        """`settings` None: the launch profile's. `weave_url`: the router's /report."""
        self._settings = settings
        self.proc_root, self.weave_url = proc_root, weave_url
        self.probe_id = secrets.token_hex(8)
        self.version = probe_version()
        self._tasks: set[asyncio.Task] = set()
        self.reports = self.last_bytes = self.mesh_bytes = self.spies = 0
        self.started = time.monotonic()
        self.last_error = ""

    # -- life cycle ----------------------------------------------------------------------
    async def start(self, ctx: ServiceContext) -> None:
        self.ctx, launch = ctx, ctx.config.launch
        self.settings = self._settings or ctx.config.settings
        self.hostname = launch.nickname
        controls_on = bool(getattr(launch, "scope_controls", False))
        self.probe = Probe(self.hostname, self.probe_id, self.version, full_every=self.settings.full_report_every,
                           controls=controls_on)
        self.walker = ProcWalker(self.proc_root)
        self.host_netns = self.walker.netns_of("self")
        self.networks = LocalNetworks()
        self.remote = Remote(ctx.bus, ctx.clock, self.settings.blocked_window_s, self.weave_url)
        self.tracker = FlowTracker()
        self.session = aiohttp.ClientSession()
        headers = report_headers(self.probe_id, self.version, launch.scope_token)
        self.targets = [AppClient(target, headers) for target in launch.scope_targets]
        self.controls = Controls(self.hostname, ctx.bus, controls_on,
                                 lambda: {e.container_id for e in attached(list(self.remote.containers.values()))})
        self.control_clients = [ControlClient(app, headers, self.controls)
                                for app in (local_app_target(launch.scope_listen), *launch.scope_targets)]
        self._metrics(ctx)
        await ctx.bus.serve(subjects.request(NAME, "status"), ProbeStatusRequest, self._on_status)
        self.mesh = MeshChannel(ctx.bus, SCOPE_CHANNEL)
        await self.mesh.start(self._ignore_mesh)
        await self.remote.start()
        await self.remote.poll(self.session)  # containers and status before the first spy
        self._spawn(self.remote.poll_forever(self.settings.weave_poll_s, self.session))
        self.docker = DockerSource(launch.docker_host, self.proc_root) if launch.docker_host else None
        if self.docker is not None:  # Scope sees Docker where the host runs an engine
            self._spawn(self.docker.poll_forever(self.settings.weave_poll_s))
        self._spawn(self._follow_conntrack())
        for client in self.targets:
            self._spawn(client.run(self.session))
        for control_client in self.control_clients:
            self._spawn(control_client.run(self.session))
        self.schedule = Schedule(self.settings.spy_interval_s, self.settings.publish_interval_s,
                                 ctx.clock.monotonic())
        self._spawn(self._timer_loop())
        log.info("probe %s for host %s; targets: %s", self.probe_id, self.hostname,
                 ", ".join(c.url for c in self.targets) or "none")

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for control_client in getattr(self, "control_clients", ()):
            await control_client.close()
        if hasattr(self, "controls"):
            self.controls.close()
        await self.session.close()

    def health(self) -> tuple[bool, str]:
        if not self.spies:
            return False, "starting"
        return True, f"{self.reports} reports published, last {self.last_bytes} bytes"

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ignore_mesh(self, _: MeshReceive) -> None:
        """Reports of other hosts are the app's; the probe only sends on the channel."""

    # -- the timer ------------------------------------------------------------------------
    async def _timer_loop(self) -> None:
        clock = self.ctx.clock
        while True:
            await asyncio.sleep(max(0.0, self.schedule.next_deadline() - clock.monotonic()))
            spy, publish = self.schedule.due(clock.monotonic())
            try:
                if spy:
                    await self._spy()
                if publish:
                    await self._publish()
            except Exception:  # one bad tick must not end the probe
                log.exception("probe tick failed")

    async def _spy(self) -> None:
        started = time.perf_counter()
        containers = self.remote.container_namespaces()
        if self.docker is not None:
            containers = {**self.docker.netns, **containers}
        networks = await asyncio.to_thread(self.networks.get, self.ctx.clock.monotonic())
        facts, samples, sockets = await asyncio.to_thread(read_local, self.walker, self.host_netns, containers,
                                                          networks)
        inputs = SpyInputs(host=facts, processes=samples, sockets=sockets, flows=self.tracker.walk(),
                           containers=list(self.remote.containers.values()), weave_status=self.remote.weave_status,
                           blocked=self.remote.blocked)
        if self.docker is not None:
            inputs.docker = self.docker.containers
            inputs.docker_pids = await asyncio.to_thread(self.docker.pids, samples)
        self.probe.spy(inputs, _ns(self.ctx.clock.now()))
        self.spies += 1
        self.spy_duration.observe(time.perf_counter() - started)

    async def _publish(self) -> None:
        pub = self.probe.publish(_ns(self.ctx.clock.now()))
        body = await asyncio.to_thread(encode_report, pub.report)
        msg = ProbeReport(probe_id=self.probe_id, host=self.hostname, probe_version=self.version, full=pub.full,
                          body=body)
        ok = await self._send(pub, msg)
        self.probe.published(pub, ok)
        for client in self.targets:
            client.offer(body)

    async def _send(self, pub: Publication, msg: ProbeReport) -> bool:
        try:
            await self.ctx.bus.publish(subjects.event(REPORT_TOPIC), msg)
            payload = encode_mesh(msg)
            await self.mesh.broadcast(payload)
        except Exception as exc:  # nats raises several kinds while reconnecting
            self.publish_errors.inc()
            if str(exc) != self.last_error:
                log.warning("cannot publish a report: %s", exc)
            self.last_error = str(exc)
            return False
        self.last_error = ""
        self.reports += 1
        self.last_bytes = len(msg.body)
        sent = len(payload) * self._receivers()
        self.mesh_bytes += sent
        self.reports_total.labels("full" if pub.full else "delta").inc()
        self.report_bytes.set(len(msg.body))
        self.mesh_bytes_total.inc(sent)
        return True

    def _receivers(self) -> int:
        """Other peers the broadcast reaches: each gets it once, over one mesh link."""
        topo = self.mesh.topology
        if topo is None:
            return 0
        return sum(1 for p in topo.peers if p.reachable and p.name != topo.ourself)

    async def _follow_conntrack(self) -> None:
        if not await asyncio.to_thread(events_supported, self.proc_root):
            log.info("conntrack events are off in this namespace: connections come from /proc only")
            return
        while True:
            sock = ConntrackSocket()
            try:
                await sock.follow(self.tracker)
            except OSError as exc:
                log.warning("conntrack: %s; retrying in 5 s", exc)
            finally:
                sock.close()
            await asyncio.sleep(5.0)

    # -- status and metrics -------------------------------------------------------------------
    async def _on_status(self, _: ProbeStatusRequest) -> ProbeStatusReply:
        return ProbeStatusReply(probe_id=self.probe_id, host=self.hostname, reports=self.reports,
                                last_bytes=self.last_bytes, bytes_per_s=self.bytes_per_s(),
                                targets=tuple(c.url for c in self.targets))

    def bytes_per_s(self) -> float:
        return self.mesh_bytes / max(time.monotonic() - self.started, 1e-9)

    def _metrics(self, ctx: ServiceContext) -> None:
        r = ctx.registry
        self.reports_total = Counter("scope_probe_reports", "Reports published.", ["kind"], registry=r)
        self.report_bytes = Gauge("scope_probe_report_bytes", "Size of the last report body (gzip).", registry=r)
        self.mesh_bytes_total = Counter("scope_probe_mesh_bytes", "Bytes the reports cost on the mesh: each "
                                        "broadcast payload times the peers it reaches.", registry=r)
        self.publish_errors = Counter("scope_probe_publish_errors", "Reports that could not be published.",
                                      registry=r)
        self.spy_duration = Summary("scope_probe_spy_duration_seconds", "Time spent in one spy (Scope's "
                                    "scope_probe_spy_duration_seconds).", registry=r)
        Gauge("scope_probe_mesh_bytes_per_second", "Mean mesh bytes per second since start.",
              registry=r).set_function(self.bytes_per_s)
        Gauge("scope_probe_processes", "Processes in the last spy.", registry=r).set_function(
            lambda: self.walker.processes)
        Gauge("scope_probe_conntrack_flows", "Active TCP flows conntrack shows.", registry=r).set_function(
            lambda: len(self.tracker.active))
        r.register(_TargetsCollector(self))


class _TargetsCollector:
    """scope_probe_target_reports_total{target,outcome}: POSTs to --scope-target apps."""

    def __init__(self, app: ProbeApp) -> None:
        self.app = app

    def collect(self):
        family = CounterMetricFamily("scope_probe_target_reports", "Reports POSTed to --scope-target apps.",
                                     labels=["target", "outcome"])
        for c in self.app.targets:
            family.add_metric([c.url, "sent"], c.sent)
            family.add_metric([c.url, "failed"], c.failed)
        yield family


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def main() -> None:
    run_service(NAME, ProbeApp)


if __name__ == "__main__":
    main()
