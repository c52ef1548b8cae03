"""The Docker reporter (sans-I/O), where the host runs a Docker engine: Docker's
containers (inspected through shared/docker.py) -> the Container and ContainerImage
topologies in the keys of Scope's docker reporter (probe/docker/container.go,
reporter.go), and the process -> container link (Scope's docker tagger).

- A container node (`<id>;<container>`): docker_container_id, _name, _state,
  _state_human, _hostname, _command, _created, docker_image_id, docker_label_<key>,
  its addresses (every Docker network's, and its weave addresses when the datapath has
  it attached: the weave MAC and weaveDNS name too), parents host and container_image.
  A container the datapath also reports (the plugin's, or `weave attach`ed ones) is
  reported here only: the Docker reporter knows more.
- An image node (`<image id>;<container_image>`): docker_image_id, docker_image_name
  and docker_image_tag (from the name the container was run with), docker_image_label_*
  are not read. The app's containers-by-image view groups containers under it.
- Processes: a process whose cgroup names a container (any process of a container
  with host networking, such as the compose stack's) or that lives in the network
  namespace of a container gets `docker_container_id` and the container as parent.
"""
from __future__ import annotations

import ipaddress
import re

from services.scope.ids import (make_address_node_id, make_container_image_node_id, make_container_node_id,
                                make_host_node_id, make_process_node_id)
from services.scope.probe import templates as t
from services.scope.probe.walker import ProcessSample
from services.scope.report import Metric, Node, Topology
from shared.docker import DockerContainer
from shared.schemas.datapath import ContainerEvent

IMAGE_ID, IMAGE_NAME, IMAGE_TAG = "docker_image_id", "docker_image_name", "docker_image_tag"
COMMAND = "docker_container_command"
_ID_IN_CGROUP = re.compile(r"([0-9a-f]{64})")
STATE_HUMAN = {"running": "Up", "paused": "Paused", "restarting": "Restarting", "exited": "Exited",
               "created": "Created", "dead": "Dead", "removing": "Removing"}


def image_name_and_tag(image: str) -> tuple[str, str]:
    """weave-busybox:latest -> (weave-busybox, latest); a name without a tag is 'latest'."""
    name, sep, tag = image.rpartition(":")
    if not sep or "/" in tag:
        return image, "latest"
    return name, tag


def container_of_cgroup(text: str, known: set[str]) -> str | None:
    """The known container id a /proc/<pid>/cgroup text names, or None."""
    for cid in _ID_IN_CGROUP.findall(text):
        if cid in known:
            return cid
    return None


class DockerReporter:
    def __init__(self, hostname: str, probe_id: str) -> None:
        self.hostname, self.probe_id = hostname, probe_id
        self.host_id = make_host_node_id(hostname)

    def report(self, containers: list[DockerContainer], attached: list[ContainerEvent],
               samples: list[ProcessSample], pids: dict[int, str], cpu_pct: dict[int, float], cpus: int,
               mem_total: int, now: int) -> tuple[Topology, Topology]:
        """(containers, images). `pids`: pid -> container id of the walked processes."""
        conts = Topology(metadata_templates=t.CONTAINER_METADATA, metric_templates=t.CONTAINER_METRICS,
                         table_templates=t.CONTAINER_TABLES)
        images = Topology()
        weave = {e.container_id: e for e in attached if e.kind == "attached"}
        procs: dict[str, list[ProcessSample]] = {}
        for s in samples:
            if s.pid in pids:
                procs.setdefault(pids[s.pid], []).append(s)
        for c in containers:
            mine = procs.get(c.id, [])
            conts.add_node(self._container(c, weave.get(c.id), mine, cpu_pct, cpus, mem_total, now))
            images.add_node(self._image(c, now))
        return conts, images

    def _container(self, c: DockerContainer, w: ContainerEvent | None, procs: list[ProcessSample],
                   cpu_pct: dict[int, float], cpus: int, mem_total: int, now: int) -> Node:
        latest = {t.CONTAINER_ID: c.id, t.CONTAINER_NAME: c.name, t.CONTAINER_STATE: c.state,
                  t.CONTAINER_STATE_HUMAN: STATE_HUMAN.get(c.state, c.state), t.CONTAINER_HOSTNAME: c.hostname,
                  t.CONTAINER_CREATED: c.created, COMMAND: c.command, IMAGE_ID: c.image_id,
                  t.CONTROL_PROBE_ID: self.probe_id, t.HOST_NODE_ID: self.host_id}
        latest.update({t.LABEL_PREFIX + k: v for k, v in c.labels.items()})
        cidrs = [ep.cidr for ep in c.networks.values() if ep.cidr]
        networks = sorted(c.networks)
        if w is not None:
            cidrs += list(w.cidrs)
            latest[t.WEAVE_MAC] = w.mac
            if w.fqdn:
                latest[t.WEAVE_DNS_HOSTNAME] = w.fqdn.rstrip(".")
            if "weave" not in networks:
                networks.append("weave")
        ips = sorted({str(ipaddress.ip_interface(x).ip) for x in cidrs})
        sets = {t.CONTAINER_IPS: ips, t.CONTAINER_NETWORKS: networks,
                t.CONTAINER_IPS_WITH_SCOPES: [make_address_node_id(self.hostname, ip) for ip in ips]}
        metrics = {t.CONTAINER_MEMORY: Metric.single(now, sum(p.rss_bytes for p in procs), max=mem_total),
                   t.CONTAINER_CPU: Metric.single(now, sum(cpu_pct.get(p.pid, 0.0) for p in procs),
                                                  max=100.0 * cpus)}
        return Node(make_container_node_id(c.id), "container", latest={k: (now, v) for k, v in latest.items()},
                    sets=sets, metrics=metrics,
                    parents={"host": (self.host_id,), "container_image": (make_container_image_node_id(c.image_id),)})

    def _image(self, c: DockerContainer, now: int) -> Node:
        name, tag = image_name_and_tag(c.image)
        latest = {IMAGE_ID: c.image_id, IMAGE_NAME: name, IMAGE_TAG: tag, t.HOST_NODE_ID: self.host_id}
        return Node(make_container_image_node_id(c.image_id), "container_image",
                    latest={k: (now, v) for k, v in latest.items()}, parents={"host": (self.host_id,)})

    def link_processes(self, processes: Topology, pids: dict[int, str], now: int) -> None:
        """Give the processes of Docker containers their container (merged into `processes`)."""
        for pid, cid in pids.items():
            nid = make_process_node_id(self.hostname, pid)
            if nid in processes.nodes:
                processes.add_node(Node(nid, "process", latest={t.CONTAINER_ID: (now, cid)},
                                        parents={"container": (make_container_node_id(cid),)}))
