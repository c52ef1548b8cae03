"""When a node's weave is ready (the DaemonSet's readiness probe), and why not (pure).

Ready means: the Node list has been read; every other Node with an address is in our
mesh, i.e. some reachable peer is either directly connected from that address or
nicknamed as that Node (the add-on launches each router with --nickname=<node name>,
so a Node reached through another peer counts, as with --conn-limit below the
cluster's size); and IPAM is ready (it has a ring and someone reachable owns space).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shared.schemas.mesh import TopologyEvent

from .nodes import NodeInfo


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: str              # "ready", or every reason it is not, joined with "; "
    missing: tuple[str, ...] = ()  # Nodes whose peer is not in our mesh


def readiness(*, synced: bool, nodes: Mapping[str, NodeInfo], my_node: str, topology: TopologyEvent | None,
              ipam_status: str | None) -> Readiness:
    """`topology`: the gossip service's (None: it did not answer); `ipam_status`: ipam's
    Status line (None: it did not answer)."""
    reasons: list[str] = []
    missing: tuple[str, ...] = ()
    if not synced:
        reasons.append("no Node list from the API server yet")
    if topology is None:
        reasons.append("the gossip service does not answer")
    elif synced:
        missing = _missing(nodes, my_node, topology)
        if missing:
            reasons.append(f"not yet in the mesh: the peers of {len(missing)} of "
                           f"{sum(1 for n in nodes.values() if n.address and n.name != my_node)} other nodes "
                           f"({', '.join(missing)})")
    if ipam_status is None:
        reasons.append("ipam does not answer")
    elif ipam_status != "ready":
        reasons.append(f"ipam: {ipam_status}")
    return Readiness(not reasons, "; ".join(reasons) or "ready", missing)


def _missing(nodes: Mapping[str, NodeInfo], my_node: str, topology: TopologyEvent) -> tuple[str, ...]:
    reachable = [p for p in topology.peers if p.reachable and p.name != topology.ourself]
    addresses = {p.address for p in reachable if p.address}
    nicknames = {p.nickname for p in reachable}
    return tuple(sorted(n.name for n in nodes.values()
                        if n.address and n.name != my_node and n.address not in addresses
                        and n.name not in nicknames))
