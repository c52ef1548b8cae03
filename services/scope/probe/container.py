"""The container reporter (sans-I/O): the containers the datapath has attached -> the
Container topology, in the keys Scope's docker reporter writes (probe/docker), plus the
weave reporter's MAC and weaveDNS name. A container here is a network namespace (what
`weave attach` takes), so: id and name are its container id, its state is running while
attached, its addresses are its weave addresses, its labels those given with --label
(`docker_label_<key>`), and its metrics the sums over the processes in its namespace.
weave:expose (the host's own addresses on the bridge) is not a container.
"""
from __future__ import annotations

import ipaddress

from services.scope.ids import make_address_node_id, make_container_node_id, make_host_node_id
from services.scope.probe import templates as t
from services.scope.probe.walker import ProcessSample
from services.scope.report import Metric, Node, Topology
from shared.schemas.datapath import ContainerEvent

EXPOSE_ID = "weave:expose"


def attached(events: list[ContainerEvent]) -> list[ContainerEvent]:
    """The containers proper: attached ones, weave:expose left out."""
    return [e for e in events if e.kind == "attached" and e.container_id != EXPOSE_ID]


def container_namespaces(events: list[ContainerEvent]) -> dict[int, str]:
    """Network namespace inode -> container id, for containers whose inode is known."""
    return {e.netns_inode: e.container_id for e in attached(events) if e.netns_inode}


def dns_names(events: list[ContainerEvent]) -> dict[str, tuple[str, ...]]:
    """Address -> weaveDNS names of the containers holding it."""
    out: dict[str, set[str]] = {}
    for e in attached(events):
        if e.fqdn:
            for cidr in e.cidrs:
                out.setdefault(str(ipaddress.ip_interface(cidr).ip), set()).add(e.fqdn.rstrip("."))
    return {addr: tuple(sorted(names)) for addr, names in out.items()}


class ContainerReporter:
    def __init__(self, hostname: str, probe_id: str, controls: bool = False) -> None:
        """`controls`: this host runs controls (`active_controls` offers them)."""
        self.hostname, self.probe_id, self.controls = hostname, probe_id, controls
        self.host_id = make_host_node_id(hostname)

    def report(self, events: list[ContainerEvent], samples: list[ProcessSample], cpu_pct: dict[int, float],
               cpus: int, mem_total: int, now: int) -> Topology:
        """`cpu_pct`: pid -> CPU percent of this spy (processes measured twice or more)."""
        topo = Topology(metadata_templates=t.CONTAINER_METADATA, metric_templates=t.CONTAINER_METRICS,
                        table_templates=t.CONTAINER_TABLES, controls=t.CONTAINER_CONTROLS if self.controls else {})
        by_netns: dict[int, list[ProcessSample]] = {}
        for s in samples:
            by_netns.setdefault(s.netns, []).append(s)
        for e in attached(events):
            procs = by_netns.get(e.netns_inode, []) if e.netns_inode else []
            topo.add_node(self._node(e, procs, cpu_pct, cpus, mem_total, now))
        return topo

    def _node(self, e: ContainerEvent, procs: list[ProcessSample], cpu_pct: dict[int, float], cpus: int,
              mem_total: int, now: int) -> Node:
        latest = {t.CONTAINER_ID: e.container_id, t.CONTAINER_NAME: e.container_id,
                  t.CONTAINER_STATE: "running", t.CONTAINER_STATE_HUMAN: "Up", t.CONTROL_PROBE_ID: self.probe_id,
                  t.HOST_NODE_ID: self.host_id, t.WEAVE_MAC: e.mac}
        if e.fqdn:
            latest[t.WEAVE_DNS_HOSTNAME] = latest[t.CONTAINER_HOSTNAME] = e.fqdn.rstrip(".")
        latest.update({t.LABEL_PREFIX + k: v for k, v in e.labels.items()})
        if self.controls:
            latest[t.ACTIVE_CONTROLS] = ";".join(t.CONTAINER_CONTROLS)
        ips = sorted({str(ipaddress.ip_interface(c).ip) for c in e.cidrs})
        sets = {t.CONTAINER_IPS: ips, t.CONTAINER_IPS_WITH_SCOPES: [make_address_node_id(self.hostname, ip) for ip in ips],
                t.CONTAINER_NETWORKS: ["weave"]}
        metrics = {t.CONTAINER_MEMORY: Metric.single(now, sum(p.rss_bytes for p in procs), max=mem_total),
                   t.CONTAINER_CPU: Metric.single(now, sum(cpu_pct.get(p.pid, 0.0) for p in procs),
                                                  max=100.0 * cpus)}
        return Node(make_container_node_id(e.container_id), "container", latest={k: (now, v) for k, v in latest.items()},
                    sets=sets, parents={"host": (self.host_id,)}, metrics=metrics)
