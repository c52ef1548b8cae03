"""Scope's renderers: from the merged report's topologies to the nodes of each API
topology (Scope's render/{endpoint,process,container,host,weave,theinternet}.go).

Endpoints carry the edges. `map_endpoints` maps every endpoint to a node of a target
topology (a process by host and pid, a container by IP, a host by `host_node_id`) or,
when no probe owns its address, to a pseudo node: `in-theinternet` (it has edges: an
inbound connection) or `out-theinternet` for addresses outside every local network, or
`service-<name>` for a well-known cloud service found by DNS. Endpoints at unowned
local addresses are dropped (Scope 1.13 does; scope#1323). Joins carry the edges up.

`Render` holds one merged report's renders; each renderer runs at most once per report
(Scope's Memoise), so a report's renders are a pure function of it.
"""
from __future__ import annotations

import functools
import ipaddress
import re
from typing import Callable

from services.scope import ids
from services.scope.app.render import filters, keys
from services.scope.app.render.nodes import JoinResults, Nodes
from services.scope.app.render.view import PSEUDO, ReportView, RNode

UNCONTAINED_ID_PREFIX = "pseudo:uncontained:"
UNMANAGED_ID_PREFIX = "pseudo:unmanaged:"
PROCESS_NAME_TOPOLOGY = f"group:{keys.PROCESS}:{keys.NAME}"
CONTAINER_HOSTNAME_TOPOLOGY = f"group:{keys.CONTAINER}:{keys.DOCKER_CONTAINER_HOSTNAME}"

_KNOWN_SERVICE = re.compile(r"^.+\.(" + "|".join([
    r"amazonaws\.com", r"googleapis\.com", r"core\.windows\.net", r"servicebus\.windows\.net",
    r"azure-api\.net", r"onmicrosoft\.com", r"cloudapp\.azure\.com", r"database\.windows\.net",
    r"documents\.azure\.com"]) + r")$")
_KNOWN_SERVICE_EXCLUDED = re.compile(r"^(ec2.*\.amazonaws\.com)$")
_PORT_MAPPING = re.compile(r"([0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}):([0-9]+)->([0-9]+)/tcp")


class Render:
    """The renders of one merged report, each computed once."""

    def __init__(self, view: ReportView) -> None:
        self.view = view
        self._memo: dict[str, object] = {}

    def memo(self, key: str, compute: Callable[[], object]):
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]


def select(r: Render, topology: str) -> Nodes:
    return Nodes(r.view.nodes(topology))


def map_nodes(f: Callable[[RNode], RNode | None], inputs: Nodes) -> Nodes:
    """Scope's Map: each input to at most one output node; adjacency follows."""
    out = JoinResults()
    for n in inputs.nodes.values():
        m = f(n)
        if m is not None:
            out.add(n.id, m)
    return out.result(inputs)


def reduce_nodes(*parts: Nodes) -> Nodes:
    out = Nodes()
    for part in parts:
        out = out.merge(part)
    return out


def derived(nid: str, n: RNode, topology: str) -> RNode:
    """A new node `nid` whose children are n and n's children (Scope's NewDerivedNode)."""
    children = dict(n.children)
    children[n.id] = n
    return RNode(nid, topology, children=children)


# -- the internet and other pseudo nodes -------------------------------------------------
class LocalNetworks:
    """The IPv4 networks of every host and overlay node (their `local_networks` sets):
    a set of network numbers per prefix length, so a lookup costs one probe per prefix
    length in use (Scope keeps a critbit tree), and answers are remembered per address."""

    def __init__(self, cidrs) -> None:
        self._by_len: dict[int, set[int]] = {}
        for cidr in cidrs:
            try:
                net = ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                continue
            if net.version == 4:
                self._by_len.setdefault(net.prefixlen, set()).add(int(net.network_address) >> (32 - net.prefixlen))
        self._seen: dict[str, bool | None] = {}

    def contains(self, addr: str) -> bool | None:
        """Whether an IPv4 address is in a local network; None: not IPv4 (Scope's ParseIP
        reads IPv4 only, so such an address is never the internet)."""
        known = self._seen.get(addr, _UNSEEN)
        if known is not _UNSEEN:
            return known
        try:
            ip = int(ipaddress.IPv4Address(addr))
        except ValueError:
            answer = None
        else:
            answer = any((ip >> (32 - plen)) in nets for plen, nets in self._by_len.items())
        self._seen[addr] = answer
        return answer


_UNSEEN = object()


def local_networks(r: Render) -> LocalNetworks:
    def compute() -> LocalNetworks:
        return LocalNetworks(cidr for topology in (keys.HOST, keys.OVERLAY)
                             for n in r.view.nodes(topology).values()
                             for cidr in n.sets.get(keys.LOCAL_NETWORKS, ()))
    return r.memo("local_networks", compute)


@functools.lru_cache(maxsize=10_000)  # as Scope's: names change rarely, the regexps cost
def is_known_service(name: str) -> bool:
    return bool(_KNOWN_SERVICE.match(name)) and not _KNOWN_SERVICE_EXCLUDED.match(name)


def pseudo_node_id(r: Render, n: RNode) -> str | None:
    """The pseudo node an unowned endpoint belongs to, or None (then it is dropped).
    Remembered per endpoint: processes, containers and hosts all ask."""
    memo = r.memo("pseudo_node_ids", dict)
    if n.id not in memo:
        memo[n.id] = _pseudo_node_id(r, n)
    return memo[n.id]


def _pseudo_node_id(r: Render, n: RNode) -> str | None:
    parsed = ids.parse_endpoint_node_id(n.id)
    if parsed is None:
        return None
    addr = parsed[1]
    forward, reverse = r.view.dns.get(addr, ((), ()))
    for name in forward + reverse:
        if is_known_service(name):
            return filters.SERVICE_NODE_ID_PREFIX + name
    if local_networks(r).contains(addr) is not False:
        return None
    return filters.INCOMING_INTERNET_ID if n.adjacency else filters.OUTGOING_INTERNET_ID


def map_endpoints(r: Render, f: Callable[[RNode], str], topology: str) -> Nodes:
    """Endpoints to nodes of `topology` (the report's nodes of it, plus new ones) by f,
    or to pseudo nodes when no probe owns them (no `host_node_id`)."""
    endpoints = select(r, keys.ENDPOINT)
    ret = JoinResults(r.view.nodes(topology))
    for n in endpoints.nodes.values():
        if keys.HOST_NODE_ID not in n.latest:
            pid = pseudo_node_id(r, n)
            if pid is not None:
                ret.add_child(n, pid, PSEUDO)
                continue
        nid = f(n)
        if nid:
            ret.add_child(n, nid, topology)
    return ret.result(endpoints)


# -- processes ---------------------------------------------------------------------------
def _more_than_one_connection(n: RNode, endpoints: dict[str, RNode]) -> bool:
    """An endpoint with edges to different (non-NAT-alias) peers may have been reused by
    another process: its pid cannot be trusted for all of them (scope#2665)."""
    if len(n.adjacency) < 2:
        return False
    first = None
    for dst in n.adjacency:
        ep = endpoints.get(dst)
        real = (ep.value(keys.COPY_OF) or dst) if ep is not None else dst
        if first is None:
            first = real
        elif first != real:
            return True
    return False


def processes(r: Render) -> Nodes:
    def compute() -> Nodes:
        if not r.view.nodes(keys.PROCESS):
            return Nodes()
        endpoints = r.view.nodes(keys.ENDPOINT)

        def to_process(ep: RNode) -> str:
            pid = ep.value(keys.PID)
            if pid is None or _more_than_one_connection(ep, endpoints):
                return ""
            host = keys.host_id_of(ep.latest)
            return ids.make_process_node_id(host, pid) if host else ""
        return map_endpoints(r, to_process, keys.PROCESS)
    return r.memo("processes", compute)


def connected_processes(r: Render) -> Nodes:
    return r.memo("connected_processes", lambda: filters.color_connected(processes(r)))


def process_names(r: Render) -> Nodes:
    def compute() -> Nodes:
        procs = processes(r)
        ret = JoinResults()
        for n in procs.nodes.values():
            if n.topology == PSEUDO:
                ret.pass_through(n)
                continue
            name = n.value(keys.NAME)
            if name is not None:
                ret.add_child_and_children(n, name, PROCESS_NAME_TOPOLOGY)
        return filters.color_connected(ret.result(procs))
    return r.memo("process_names", compute)


# -- containers --------------------------------------------------------------------------
def _process_to_container(n: RNode) -> RNode:
    if n.topology == PSEUDO:
        return n
    container_id = n.value(keys.DOCKER_CONTAINER_ID)
    if container_id is not None:
        return derived(ids.make_container_node_id(container_id), n, keys.CONTAINER)
    host = ids.parse_process_node_id(n.id)
    return derived(UNCONTAINED_ID_PREFIX + (host[0] if host else ""), n, PSEUDO)


def container_ips(n: RNode) -> list[str]:
    """Scoped addresses (`<scope>;<ip>;`) and mapped host ports that identify container n."""
    if keys.DOES_NOT_MAKE_CONNECTIONS in n.latest or keys.DOCKER_IS_IN_HOST_NETWORK in n.latest:
        return []
    out = []
    for scoped in n.sets.get(keys.DOCKER_CONTAINER_IPS_WITH_SCOPES, ()):
        parts = ids.parse_address_node_id(scoped)
        if parts is None or ids.is_loopback(parts[1]):
            continue  # loopback is every namespace's: it cannot name a container
        out.append(ids.make_scoped_endpoint_node_id(parts[0], parts[1], ""))
    for mapping in n.sets.get(keys.DOCKER_CONTAINER_PORTS, ()):
        m = _PORT_MAPPING.search(mapping)
        if m is not None:
            out.append(ids.make_scoped_endpoint_node_id("", m.group(1), m.group(2)))
    return out


def _connection_join(r: Render) -> Nodes:
    """Endpoints to containers by (scoped) IP, or by host IP and mapped port."""
    by_ip: dict[str, str] = {}
    for n in r.view.nodes(keys.CONTAINER).values():
        for ip in container_ips(n):
            by_ip[ip] = "" if ip in by_ip else n.id  # shared by two: cannot attribute

    def to_container(ep: RNode) -> str:
        parsed = ids.parse_endpoint_node_id(ep.id)
        if parsed is None:
            return ""
        scope, addr, port = parsed
        nid = by_ip.get(ids.make_scoped_endpoint_node_id(scope, addr, ""))
        if nid is None:
            nid = by_ip.get(ids.make_scoped_endpoint_node_id(scope, addr, port))
        return nid or ""
    return map_endpoints(r, to_container, keys.CONTAINER)


def containers(r: Render) -> Nodes:
    def compute() -> Nodes:
        joined = reduce_nodes(map_nodes(_process_to_container, processes(r)), _connection_join(r))
        return filters.make_filter(lambda n: n.value(keys.DOCKER_CONTAINER_STATE) != keys.STATE_DELETED, joined)
    return r.memo("containers", compute)


def image_node_id(n: RNode) -> str:
    """The image node a container or image node belongs to: its name without registry
    host and tag ("" without a name)."""
    name = n.value(keys.DOCKER_IMAGE_NAME)
    if name is None:
        return ""
    parts = name.split("/", 2)
    if len(parts) == 3:
        name = "/".join(parts[1:])
    return ids.make_container_image_node_id(name.split(":", 1)[0])


_IMAGE_KEYS = (keys.DOCKER_IMAGE_NAME, keys.DOCKER_IMAGE_TAG, keys.DOCKER_IMAGE_SIZE,
               keys.DOCKER_IMAGE_VIRTUAL_SIZE, keys.DOCKER_IMAGE_LABEL_PREFIX + "works.weave.role")


def containers_with_image_names(r: Render) -> Nodes:
    def compute() -> Nodes:
        conts = containers(r)
        images = r.view.nodes(keys.CONTAINER_IMAGE)
        out = dict(conts.nodes)
        for nid, c in conts.nodes.items():
            image_id = c.value(keys.DOCKER_IMAGE_ID)
            image = images.get(ids.make_container_image_node_id(image_id)) if image_id is not None else None
            if image is None or not image_node_id(image):
                continue
            c = c.copy()
            for key in _IMAGE_KEYS:
                if key in image.latest:
                    c.latest[key] = image.latest[key]
            c.parents[keys.CONTAINER_IMAGE] = (image_node_id(image),)
            out[nid] = c
        return Nodes(out, conts.filtered)
    return r.memo("containers_with_image_names", compute)


def container_images(r: Render) -> Nodes:
    def compute() -> Nodes:
        conts = containers_with_image_names(r)
        images = r.view.nodes(keys.CONTAINER_IMAGE)
        ret = JoinResults()
        for n in conts.nodes.values():
            if n.topology == PSEUDO:
                ret.pass_through(n)
                continue
            image_id, nid = n.value(keys.DOCKER_IMAGE_ID), image_node_id(n)
            if image_id is None or not nid:
                continue
            if nid not in ret.nodes:
                base = images.get(ids.make_container_image_node_id(image_id))
                node = base.copy() if base is not None else RNode(nid, keys.CONTAINER_IMAGE)
                node.id, node.adjacency = nid, set()
                ret.nodes[nid] = node
            ret.add_child(n, nid, keys.CONTAINER_IMAGE)
        return filters.make_filter(filters.has_children(keys.CONTAINER), ret.result(conts))
    return r.memo("container_images", compute)


def container_hostnames(r: Render) -> Nodes:
    def compute() -> Nodes:
        conts = containers_with_image_names(r)
        ret = JoinResults()
        for n in conts.nodes.values():
            if n.topology == PSEUDO:
                ret.pass_through(n)
                continue
            hostname = n.value(keys.DOCKER_CONTAINER_HOSTNAME)
            if hostname is not None:
                ret.add_child_and_children(n, hostname, CONTAINER_HOSTNAME_TOPOLOGY)
        return filters.make_filter(filters.has_children(keys.CONTAINER), ret.result(conts))
    return r.memo("container_hostnames", compute)


# -- hosts and the weave overlay ---------------------------------------------------------
def _nodes_to_hosts(nodes: Nodes, adjacency: bool = True) -> Nodes:
    """Each node to its host parents (pseudo nodes dropped: endpoints make those).
    Image nodes span hosts, so their edges would join unrelated hosts: not carried."""
    ret = JoinResults()
    for n in nodes.nodes.values():
        if n.topology == PSEUDO:
            continue
        for host in n.parents.get(keys.HOST, ()):
            if adjacency:
                ret.add_child(n, host, keys.HOST)
            else:
                ret.add_unmapped_child(n, host, keys.HOST)
    return ret.result(nodes)


def hosts(r: Render) -> Nodes:
    def compute() -> Nodes:
        by_endpoint = map_endpoints(r, lambda ep: ep.value(keys.HOST_NODE_ID) or "", keys.HOST)
        return reduce_nodes(_nodes_to_hosts(processes(r)), _nodes_to_hosts(containers(r)),
                            _nodes_to_hosts(container_images(r), adjacency=False), by_endpoint)
    return r.memo("hosts", compute)


def _weave_identity(n: RNode) -> RNode | None:
    parsed = ids.parse_overlay_node_id(n.id)
    if parsed is None or parsed[0] != ids.WEAVE_OVERLAY_PEER_PREFIX:
        return None  # Docker's overlay peers are not Weave Net's
    if keys.HOST_NODE_ID in n.latest:
        return n
    # a peer no probe reports on (its only record is another peer's view of it)
    return derived(UNMANAGED_ID_PREFIX + (n.value(keys.WEAVE_PEER_NICK_NAME) or ""), n, PSEUDO)


def weave(r: Render) -> Nodes:
    return r.memo("weave", lambda: map_nodes(_weave_identity, select(r, keys.OVERLAY)))
