"""The probe's core (sans-I/O): Scope's spy and publish loops (probe/probe.go) as a
value that takes what was read and `now`, and gives back reports to send.

- `Schedule`: spy every `spy_s`, publish every `publish_s` (a spy due at the same
  instant runs first, so a publish includes it); `next_deadline()` for the shell's timer.
- `Probe.spy(inputs, now)`: one report from every reporter (host, processes, endpoints,
  containers, weave), merged into the reports spied since the last publish.
- `Probe.publish(now)`: the merged spies as one report: every `full_every`-th publish
  whole, the others un-merged against the last full one (Scope's deltas, `scope_delta`). `published(ok)`
  records the outcome: a failed publish makes the next one full, as Scope's does.
Report ids are drawn from the `rng` given (Scope: a random int63 in decimal).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from services.scope.probe.conntrack import Flow
from services.scope.probe.container import ContainerReporter, container_namespaces, dns_names
from services.scope.probe.docker import DockerReporter
from services.scope.probe.endpoint import EndpointReporter
from services.scope.probe.host import HostFacts, HostReporter
from services.scope.probe.overlay import OverlayReporter
from services.scope.probe.process import ProcessReporter
from services.scope.probe.walker import NamespaceSockets, ProcessSample
from services.scope.report import Node, Report
from shared.docker import DockerContainer
from shared.schemas.datapath import ContainerEvent
from shared.schemas.npc import BlockedFlow


@dataclass
class SpyInputs:
    """Everything one spy read (the shell's I/O), for the reporters."""

    host: HostFacts
    processes: list[ProcessSample]
    sockets: list[NamespaceSockets] = field(default_factory=list)
    flows: list[Flow] = field(default_factory=list)
    containers: list[ContainerEvent] = field(default_factory=list)
    weave_status: dict | None = None
    blocked: list[BlockedFlow] = field(default_factory=list)
    docker: list[DockerContainer] = field(default_factory=list)
    """The Docker engine's containers (docker_source.py), where the host has one."""
    docker_pids: dict[int, str] = field(default_factory=dict)
    """pid -> Docker container id of the walked processes that are a container's."""


@dataclass(frozen=True)
class Publication:
    report: Report
    full: bool


class Schedule:
    def __init__(self, spy_s: float, publish_s: float, start: float) -> None:
        self.spy_s, self.publish_s = spy_s, publish_s
        self.next_spy, self.next_publish = start, start + publish_s

    def due(self, now: float) -> tuple[bool, bool]:
        """(spy, publish) due at `now`; each due one is re-armed from its own deadline
        (skipping ticks missed by more than one interval, as a Go ticker drops them)."""
        spy, publish = now >= self.next_spy, now >= self.next_publish
        if spy:
            self.next_spy = _rearm(self.next_spy, self.spy_s, now)
        if publish:
            self.next_publish = _rearm(self.next_publish, self.publish_s, now)
        return spy, publish

    def next_deadline(self) -> float:
        return min(self.next_spy, self.next_publish)


def scope_delta(rpt: Report, prev: Report) -> Report:
    """`rpt.unmerge(prev)`, less what Scope's un-merge also leaves out: a node's latest
    entries whose values are all unchanged, only newer (Scope's EqualIgnoringTimestamps;
    report.py's un-merge keeps them, so that merging the delta is exact). The app keeps
    the last full report in its window, so the older timestamps stand in for them."""
    delta = rpt.unmerge(prev)
    for name, topology in delta.topologies():
        before, now = getattr(prev, name).nodes, getattr(rpt, name).nodes
        for key, node in list(topology.nodes.items()):
            old = before.get(key)
            if old is None or not node.latest or not _same_values(now[key].latest, old.latest):
                continue
            if node.sets or node.parents or node.adjacency or node.metrics or node.children:
                topology.nodes[key] = Node(node.id, node.topology, sets=node.sets, adjacency=node.adjacency,
                                           parents=node.parents, metrics=node.metrics, children=node.children)
            else:
                del topology.nodes[key]
    return delta


def _same_values(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k][1] == b[k][1] for k in a)


def _rearm(deadline: float, interval: float, now: float) -> float:
    deadline += interval
    return deadline if deadline > now else now + interval


class Probe:
    def __init__(self, hostname: str, probe_id: str, version: str, *, full_every: int = 3,
                 rng: random.Random | None = None, controls: bool = False) -> None:
        """`controls`: offer this host's controls in its reports (`--scope-controls`)."""
        self.hostname, self.probe_id, self.version = hostname, probe_id, version
        self.full_every = full_every
        self.rng = rng or random.Random()
        self.host = HostReporter(hostname, probe_id, version, controls)
        self.processes = ProcessReporter(hostname)
        self.endpoints = EndpointReporter(hostname)
        self.containers = ContainerReporter(hostname, probe_id, controls)
        self.docker = DockerReporter(hostname, probe_id)
        self.overlay = OverlayReporter(hostname)
        self._pending: Report | None = None
        self._last_full: Report | None = None
        self._last_publish: int | None = None
        self.count = 0
        """Successful publishes since start or the last failure (Scope's publishCount)."""

    def spy(self, inputs: SpyInputs, now: int) -> Report:
        """One spy's report (also merged into what the next publish sends)."""
        r = Report.make(now, "")
        r.host.merge_in(self.host.report(inputs.host, now))
        netns_to_container = container_namespaces(inputs.containers)
        r.process.merge_in(self.processes.report(inputs.processes, inputs.host.cpu, netns_to_container, now))
        docker_ids = {c.id for c in inputs.docker}  # the Docker reporter reports those (docker.py)
        r.container.merge_in(self.containers.report([e for e in inputs.containers if e.container_id not in docker_ids],
                                                     inputs.processes, self.processes.cpu_pct,
                                                     inputs.host.cpu.cpus, inputs.host.mem_total, now))
        if inputs.docker:
            conts, images = self.docker.report(inputs.docker, inputs.containers, inputs.processes, inputs.docker_pids,
                                               self.processes.cpu_pct, inputs.host.cpu.cpus, inputs.host.mem_total,
                                               now)
            r.container.merge_in(conts)
            r.container_image.merge_in(images)
            self.docker.link_processes(r.process, inputs.docker_pids, now)
        endpoints, dns = self.endpoints.report(inputs.sockets, inputs.flows, inputs.blocked,
                                               dns_names(inputs.containers), now)
        r.endpoint.merge_in(endpoints)
        r.dns = dns
        r.overlay.merge_in(self.overlay.report(inputs.weave_status, inputs.blocked, now))
        if self._pending is None:
            self._pending = r.copy()
        else:
            self._pending.merge_in(r)
        return r

    def publish(self, now: int) -> Publication:
        """The report to send now (call `published` with the outcome)."""
        rpt = self._pending if self._pending is not None else Report.make(now, "")
        self._pending = None
        rpt.id = str(self.rng.getrandbits(63))
        rpt.window = now - self._last_publish if self._last_publish is not None else 0
        self._last_publish = now
        full = self.count % self.full_every == 0 or self._last_full is None
        if not full:
            rpt = scope_delta(rpt, self._last_full)
        return Publication(rpt, full)

    def published(self, pub: Publication, ok: bool) -> None:
        if not ok:
            self.count = 0
            return
        if pub.full:
            self._last_full = pub.report
        self.count += 1
