"""The host reporter (sans-I/O): this host's node in the Host topology.

Facts are read by the shell (`read_host_facts`, below the line) and passed in; the
reporter keeps the previous CPU times to turn them into a usage percentage, as Scope's
GetCPUUsagePercent does (the first spy is measured against boot). Keys, metrics and
templates are Scope's (probe/host/reporter.go); the hostname is the weave peer's
nickname, so the hosts of a testbed, which share one kernel hostname, are told apart.
"""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

from services.scope.ids import make_host_node_id
from services.scope.probe import procfs, templates as t
from services.scope.report import Metric, Node, Topology, format_rfc3339nano


@dataclass(frozen=True)
class HostFacts:
    kernel: str
    """`<release> <version>` of uname, as Scope shows it."""
    uptime_s: int
    load1: float
    cpu: procfs.CpuTimes
    mem_used: int
    mem_total: int
    local_networks: tuple[str, ...]
    """This host's IPv4 addresses as ip/len (Scope's GetLocalNetworks), loopback included."""


class HostReporter:
    def __init__(self, hostname: str, probe_id: str, version: str, controls: bool = False) -> None:
        """`controls`: this host runs controls (`active_controls` offers them)."""
        self.hostname, self.probe_id, self.version = hostname, probe_id, version
        self.controls = controls
        self.node_id = make_host_node_id(hostname)
        self._prev_cpu = procfs.CpuTimes(0, 0, 1)

    def report(self, facts: HostFacts, now: int) -> Topology:
        prev, self._prev_cpu = self._prev_cpu, facts.cpu
        total, idle = facts.cpu.total - prev.total, facts.cpu.idle - prev.idle
        cpu = (total - idle) * 100.0 / total if total > 0 else 0.0
        node = Node(self.node_id, "host", latest={k: (now, v) for k, v in {
            t.CONTROL_PROBE_ID: self.probe_id, t.TIMESTAMP: format_rfc3339nano(now), t.HOST_NAME: self.hostname,
            t.OS: "linux", t.KERNEL_VERSION: facts.kernel, t.UPTIME: str(facts.uptime_s),
            t.SCOPE_VERSION: self.version, t.HOST_NODE_ID: self.node_id, **self._controls()}.items()},
            sets={t.LOCAL_NETWORKS: facts.local_networks}, parents={"host": (self.node_id,)},
            metrics={t.HOST_CPU: Metric.single(now, cpu, max=100.0),
                     t.HOST_MEMORY: Metric.single(now, facts.mem_used, max=facts.mem_total),
                     t.LOAD1: Metric.single(now, facts.load1)})
        topo = Topology(metadata_templates=t.HOST_METADATA, metric_templates=t.HOST_METRICS,
                        controls=t.HOST_CONTROLS_ON if self.controls else t.HOST_CONTROLS)
        return topo.add_node(node)

    def _controls(self) -> dict[str, str]:
        return {t.ACTIVE_CONTROLS: ";".join(t.HOST_CONTROLS_ON)} if self.controls else {}


# -- reading (the shell's side) ------------------------------------------------------------

def read_host_facts(proc_root: str = "/proc", networks: tuple[str, ...] | None = None) -> HostFacts:
    """Blocking reads of /proc and, unless `networks` is given, of the namespace's
    addresses (run in a thread)."""
    uname = os.uname()
    used, total = procfs.parse_meminfo(_read(f"{proc_root}/meminfo"))
    return HostFacts(kernel=f"{uname.release} {uname.version}", uptime_s=procfs.parse_uptime(_read(
        f"{proc_root}/uptime")), load1=procfs.parse_loadavg(_read(f"{proc_root}/loadavg")),
        cpu=procfs.parse_cpu_times(_read(f"{proc_root}/stat")), mem_used=used, mem_total=total,
        local_networks=local_networks() if networks is None else networks)


class LocalNetworks:
    """The namespace's addresses, read again at most every `refresh_s` (a netlink dump
    costs more than the rest of the host's facts together; addresses rarely change)."""

    def __init__(self, refresh_s: float = 10.0) -> None:
        self.refresh_s = refresh_s
        self._value: tuple[str, ...] = ()
        self._read_at: float | None = None

    def get(self, now: float) -> tuple[str, ...]:
        if self._read_at is None or now - self._read_at >= self.refresh_s:
            self._value, self._read_at = local_networks(), now
        return self._value


def local_networks() -> tuple[str, ...]:
    """IPv4 addresses of every interface of this network namespace, as ip/len."""
    from shared.netlink import IPRoute

    with IPRoute() as ipr:
        out = []
        for msg in ipr.get_addr(family=2):
            addr = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
            if addr:
                out.append(f"{addr}/{msg['prefixlen']}")
    return tuple(sorted(set(out), key=_addr_key))


def _addr_key(cidr: str) -> tuple:
    iface = ipaddress.ip_interface(cidr)
    return (int(iface.ip), iface.network.prefixlen)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()
