"""The endpoint reporter (sans-I/O): connections -> the Endpoint topology, as Scope's
connection tracker makes it (probe/endpoint/connection_tracker.go).

Inputs: every namespace's live TCP connections from /proc (with the pid owning each
socket), conntrack's flows (short-lived ones included) and the flows npc blocked.
- Each connection is an edge between two endpoint nodes (`<scope>;<addr>;<port>`, see
  services/scope/ids.py): `from` gets the adjacency. The direction is conntrack's when it saw the
  flow (the four-tuple as the client opened it), else Scope's guess: the lower port is
  the server's. The end whose socket a process holds gets `pid` and `host_node_id`
  (its namespace scopes loopback addresses: `<host>-<netns inode>`); conntrack's flows
  carry no pid and scope loopback by the host alone, as Scope's.
- Every address gets a DNS record: reverse names are the weaveDNS names this host
  knows for it (its containers'), as a reverse lookup of weaveDNS would answer.
- A blocked attempt (ours, docs/scope.md) is an edge from its source endpoint to its
  destination endpoint, the source marked `weave_py_blocked` = "true" with the
  destination in the set `weave_py_blocked_to`, so an app can draw it as blocked.
"""
from __future__ import annotations

from typing import NamedTuple

from services.scope.ids import address_scope, make_host_node_id, make_scoped_endpoint_node_id
from services.scope.probe import templates as t
from services.scope.probe.conntrack import Flow
from services.scope.probe.walker import NamespaceSockets
from services.scope.report import Dns, Node, Topology
from shared.schemas.npc import BlockedFlow


class FourTuple(NamedTuple):
    from_addr: str
    to_addr: str
    from_port: int
    to_port: int

    def key(self) -> tuple[tuple[str, int], tuple[str, int]]:
        """Direction-free identity (Scope's fourTuple.key)."""
        a, b = (self.from_addr, self.from_port), (self.to_addr, self.to_port)
        return (a, b) if a <= b else (b, a)

    def reversed(self) -> "FourTuple":
        return FourTuple(self.to_addr, self.from_addr, self.to_port, self.from_port)


class EndpointReporter:
    def __init__(self, hostname: str, local_networks: tuple = ()) -> None:
        self.hostname = hostname
        self.host_id = make_host_node_id(hostname)
        self.local_networks = local_networks
        self._scopes: dict[tuple[str, str], str] = {}
        """(namespace, address) -> the scope of its endpoint ids (ids.address_scope)."""

    def report(self, namespaces: list[NamespaceSockets], flows: list[Flow], blocked: list[BlockedFlow],
               names: dict[str, tuple[str, ...]], now: int) -> tuple[Topology, Dns]:
        """`names`: address -> weaveDNS names (reverse DNS). Returns the topology and DNS."""
        acc = _Endpoints(now, self.host_id)
        seen: dict[tuple, FourTuple] = {}
        for flow in flows:
            ft = flow.four_tuple()
            tuple_ = FourTuple(ft.src, ft.dst, ft.sport, ft.dport)
            seen[tuple_.key()] = tuple_
            acc.edge(self._id("", tuple_.from_addr, tuple_.from_port), self._id("", tuple_.to_addr, tuple_.to_port))
            acc.addresses.update((tuple_.from_addr, tuple_.to_addr))
        for ns in namespaces:
            for c in ns.connections:
                local = FourTuple(c.local_addr, c.remote_addr, c.local_port, c.remote_port)
                canonical = seen.get(local.key())
                incoming = canonical != local if canonical is not None else local.from_port < local.to_port
                pid = ns.owners.get(c.inode, 0)
                namespace = str(ns.netns) if pid else ""
                ft = local.reversed() if incoming else local
                from_id = self._id(namespace, ft.from_addr, ft.from_port)
                to_id = self._id(namespace, ft.to_addr, ft.to_port)
                acc.edge(from_id, to_id)
                if pid:  # the pid holds the local end: `to` when the connection is incoming
                    acc.owner(to_id if incoming else from_id, pid)
                acc.addresses.update((c.local_addr, c.remote_addr))
        for b in blocked:
            src, dst = self._id("", b.src, b.sport), self._id("", b.dst, b.dport)
            acc.edge(src, dst)
            acc.blocked.setdefault(src, set()).add(dst)
            acc.addresses.update((b.src, b.dst))
        dns = {addr: ((), names.get(addr, ())) for addr in acc.addresses}
        return acc.topology(), dns

    def _id(self, namespace: str, address: str, port: int) -> str:
        key = (namespace, address)
        scope = self._scopes.get(key)
        if scope is None:
            if len(self._scopes) >= 65536:
                self._scopes.clear()
            scope = self._scopes[key] = address_scope(self.hostname, namespace, address, self.local_networks)
        return make_scoped_endpoint_node_id(scope, address, port)


class _Endpoints:
    """One spy's endpoints, gathered as plain values, then made into nodes once each."""

    def __init__(self, now: int, host_id: str) -> None:
        self.now, self.host_id = now, host_id
        self.adjacency: dict[str, set[str]] = {}
        self.pids: dict[str, int] = {}
        self.blocked: dict[str, set[str]] = {}
        self.addresses: set[str] = set()

    def edge(self, from_id: str, to_id: str) -> None:
        self.adjacency.setdefault(from_id, set()).add(to_id)
        self.adjacency.setdefault(to_id, set())

    def owner(self, node_id: str, pid: int) -> None:
        self.pids[node_id] = pid

    def topology(self) -> Topology:
        topo = Topology()
        now, host_id = self.now, self.host_id
        for node_id, adjacent in self.adjacency.items():
            latest = {}
            pid = self.pids.get(node_id)
            if pid is not None:
                latest = {t.PID: (now, str(pid)), t.HOST_NODE_ID: (now, host_id)}
            sets = {}
            if node_id in self.blocked:
                latest[t.BLOCKED] = (now, "true")
                sets = {t.BLOCKED_TO: self.blocked[node_id]}
            topo.nodes[node_id] = Node(node_id, "endpoint", latest=latest, sets=sets, adjacency=adjacent)
        return topo
