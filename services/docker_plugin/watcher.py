"""Weave's Docker watcher, sans I/O: which Docker containers the datapath should hold
as attached, decided from Docker's events and a listing (the shell asks Docker and the
datapath, then carries out what this returns).

Rules:
- A container that starts on one of our networks is adopted: the datapath records its
  plugin interface (ethwe0, the address Docker's IPAM call got from weave IPAM) with
  `ipam=False`, its labels (npc's podSelector) and a weaveDNS name, so weaveDNS, npc,
  `weave ps` and Scope know it like any attached container. Only its first weave
  network is adopted (the datapath holds one weave interface per container).
- Its name: Weave's plugin registers `<hostname>.<domainname>` when the container has
  a domain name (`docker run -h web.weave.local`, or `--domainname`); otherwise ours
  registers `<container name>.<weaveDNS domain>` (`--name web` -> web.weave.local), when
  the name is a DNS label.
- A Docker container that dies (stops, is killed) or is removed is detached, whether
  the plugin or `weave attach` put it on weave (as Weave's watcher: its names go, and
  what `weave attach` allocated for it is released; the plugin's address is released
  by Docker through the IPAM driver).
- Reconciling (at start, after the event stream broke): running containers on our
  networks that the datapath does not hold are adopted; records of Docker containers
  (a 64-hex id) that are not running are detached.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from services.docker_plugin.driver import CONTAINER_IFNAME, Network
from shared.docker import DockerContainer

_DOCKER_ID = re.compile(r"^[0-9a-f]{64}$")
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


@dataclass(frozen=True)
class Adopt:
    container_id: str
    netns: str
    cidr: str
    fqdn: str
    ifname: str
    multicast: bool
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Detach:
    container_id: str


Action = Adopt | Detach


def is_docker_id(container_id: str) -> bool:
    return bool(_DOCKER_ID.match(container_id))


def fqdn_for(c: DockerContainer, domain: str) -> str:
    """The weaveDNS name of a container (module docstring); '' when it has none."""
    if c.domainname:
        name = f"{c.hostname}.{c.domainname}".strip(".")
    elif _LABEL.match(c.name):
        name = f"{c.name}.{domain.strip('.')}"
    else:
        return ""
    return name if all(_LABEL.match(part) for part in name.split(".")) else ""


def our_endpoint(c: DockerContainer, networks: dict[str, Network]):
    """(network, endpoint) of the container's first weave network with an address, or None."""
    for ep in c.networks.values():
        net = networks.get(ep.network_id)
        if net is not None and net.ours and ep.cidr:
            return net, ep
    return None


def on_start(c: DockerContainer, networks: dict[str, Network], domain: str) -> list[Action]:
    found = our_endpoint(c, networks) if c.running else None
    if found is None:
        return []
    net, ep = found
    return [Adopt(c.id, c.netns_path, ep.cidr, fqdn_for(c, domain), f"{CONTAINER_IFNAME}0", net.multicast,
                  dict(c.labels))]


def on_gone(container_id: str, attached: set[str]) -> list[Action]:
    """A container died or was removed."""
    return [Detach(container_id)] if container_id in attached else []


def reconcile(running: list[DockerContainer], attached: set[str], networks: dict[str, Network],
              domain: str) -> list[Action]:
    actions: list[Action] = []
    alive = {c.id for c in running if c.running}
    for c in running:
        if c.id not in attached:
            actions += on_start(c, networks, domain)
    actions += [Detach(cid) for cid in sorted(attached) if is_docker_id(cid) and cid not in alive]
    return actions
