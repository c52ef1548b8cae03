"""The process reporter (sans-I/O): walked processes -> the Process topology.

Scope's keys and metrics (probe/process/reporter.go): pid, name, cmdline, threads, ppid
(when > 0); memory (RSS, max the RSS limit), open files (max the soft limit), CPU (from
the previous spy of the same process, identified by pid and start time; a process seen
for the first time has no CPU sample yet). Processes in an attached container's network
namespace get the container as parent and `docker_container_id`, as Scope's docker
tagger gives processes of a container.
"""
from __future__ import annotations

from services.scope.ids import make_container_node_id, make_host_node_id, make_process_node_id
from services.scope.probe import procfs, templates as t
from services.scope.probe.walker import ProcessSample
from services.scope.report import Metric, Node, Topology


class ProcessReporter:
    def __init__(self, hostname: str) -> None:
        self.hostname = hostname
        self.host_id = make_host_node_id(hostname)
        self._prev: dict[tuple[int, int], int] = {}
        """(pid, start ticks) -> jiffies at the previous spy."""
        self._prev_total = 0
        self.cpu_pct: dict[int, float] = {}
        """pid -> CPU percent at the last spy (processes seen at two spies or more)."""

    def report(self, samples: list[ProcessSample], cpu: procfs.CpuTimes, containers: dict[int, str],
               now: int) -> Topology:
        """`containers`: network namespace inode -> container id (attached containers)."""
        total_delta, self._prev_total = cpu.total - self._prev_total, cpu.total
        prev, self._prev, self.cpu_pct = self._prev, {}, {}
        topo = Topology(metadata_templates=t.PROCESS_METADATA, metric_templates=t.PROCESS_METRICS)
        for s in samples:
            key = (s.pid, s.start_ticks)
            self._prev[key] = s.jiffies
            before = prev.get(key)
            cpu_pct = None if before is None else procfs.cpu_percent(s.jiffies - before, total_delta, cpu.cpus)
            if cpu_pct is not None:
                self.cpu_pct[s.pid] = cpu_pct
            topo.add_node(self._node(s, cpu_pct, cpu.cpus, containers.get(s.netns), now))
        return topo

    def _node(self, s: ProcessSample, cpu_pct: float | None, cpus: int, container: str | None, now: int) -> Node:
        latest = {t.PID: str(s.pid), t.THREADS: str(s.threads), t.NAME: s.name, t.HOST_NODE_ID: self.host_id}
        if s.cmdline:
            latest[t.CMDLINE] = s.cmdline
        if s.ppid > 0:
            latest[t.PPID] = str(s.ppid)
        parents = {"host": (self.host_id,)}
        if container is not None:
            latest[t.CONTAINER_ID] = container
            parents["container"] = (make_container_node_id(container),)
        metrics = {t.PROCESS_MEMORY: Metric.single(now, s.rss_bytes, max=s.rss_limit),
                   t.OPEN_FILES: Metric.single(now, s.open_files, max=s.open_files_limit)}
        if cpu_pct is not None:
            metrics[t.PROCESS_CPU] = Metric.single(now, cpu_pct, max=100.0 * cpus)
        return Node(make_process_node_id(self.hostname, s.pid), "process", latest={k: (now, v) for k, v in latest.items()},
                    parents=parents, metrics=metrics)
