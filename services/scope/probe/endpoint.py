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

from dataclasses import dataclass

from services.scope.ids import make_endpoint_node_id, make_host_node_id
from services.scope.probe import templates as t
from services.scope.probe.conntrack import Flow
from services.scope.probe.walker import NamespaceSockets
from services.scope.report import Dns, Node, Topology
from shared.schemas.npc import BlockedFlow


@dataclass(frozen=True)
class FourTuple:
    from_addr: str
    to_addr: str
    from_port: int
    to_port: int

    def key(self) -> tuple[str, str]:
        """Direction-free identity (Scope's fourTuple.key)."""
        a, b = f"{self.from_addr}:{self.from_port}", f"{self.to_addr}:{self.to_port}"
        return (a, b) if a <= b else (b, a)

    def reversed(self) -> "FourTuple":
        return FourTuple(self.to_addr, self.from_addr, self.to_port, self.from_port)


class EndpointReporter:
    def __init__(self, hostname: str, local_networks: tuple = ()) -> None:
        self.hostname = hostname
        self.host_id = make_host_node_id(hostname)
        self.local_networks = local_networks

    def report(self, namespaces: list[NamespaceSockets], flows: list[Flow], blocked: list[BlockedFlow],
               names: dict[str, tuple[str, ...]], now: int) -> tuple[Topology, Dns]:
        """`names`: address -> weaveDNS names (reverse DNS). Returns the topology and DNS."""
        topo, dns = Topology(), {}
        seen: dict[tuple[str, str], FourTuple] = {}
        for flow in flows:
            ft = flow.four_tuple()
            tuple_ = FourTuple(ft.src, ft.dst, ft.sport, ft.dport)
            seen[tuple_.key()] = tuple_
            self._connection(topo, dns, names, tuple_, "", None, now)
        for ns in namespaces:
            for c in ns.connections:
                local = FourTuple(c.local_addr, c.remote_addr, c.local_port, c.remote_port)
                canonical = seen.get(local.key())
                incoming = canonical != local if canonical is not None else local.from_port < local.to_port
                pid = ns.owners.get(c.inode, 0)
                namespace = str(ns.netns) if pid else ""
                ft = local.reversed() if incoming else local
                self._connection(topo, dns, names, ft, namespace, (pid, incoming) if pid else None, now)
        for b in blocked:
            self._blocked(topo, dns, names, b, now)
        return topo, dns

    def _connection(self, topo: Topology, dns: Dns, names: dict, ft: FourTuple, namespace: str,
                    owner: tuple[int, bool] | None, now: int) -> None:
        """`owner`: (pid, incoming): the pid holds the `to` end when the connection is incoming."""
        from_id = make_endpoint_node_id(self.hostname, namespace, ft.from_addr, ft.from_port, self.local_networks)
        to_id = make_endpoint_node_id(self.hostname, namespace, ft.to_addr, ft.to_port, self.local_networks)
        from_node, to_node = Node(from_id, "endpoint", adjacency=(to_id,)), Node(to_id, "endpoint")
        if owner is not None:
            info = {t.PID: (now, str(owner[0])), t.HOST_NODE_ID: (now, self.host_id)}
            if owner[1]:
                to_node = Node(to_id, "endpoint", latest=info)
            else:
                from_node = Node(from_id, "endpoint", adjacency=(to_id,), latest=info)
        topo.add_node(from_node).add_node(to_node)
        for addr in (ft.from_addr, ft.to_addr):
            dns.setdefault(addr, ((), names.get(addr, ())))

    def _blocked(self, topo: Topology, dns: Dns, names: dict, b: BlockedFlow, now: int) -> None:
        src = make_endpoint_node_id(self.hostname, "", b.src, b.sport, self.local_networks)
        dst = make_endpoint_node_id(self.hostname, "", b.dst, b.dport, self.local_networks)
        topo.add_node(Node(src, "endpoint", adjacency=(dst,), latest={t.BLOCKED: (now, "true")},
                           sets={t.BLOCKED_TO: (dst,)}))
        topo.add_node(Node(dst, "endpoint"))
        for addr in (b.src, b.dst):
            dns.setdefault(addr, ((), names.get(addr, ())))
