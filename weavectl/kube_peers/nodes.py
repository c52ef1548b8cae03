"""The cluster's Nodes as peers of the mesh (sans-I/O).

A Node's peer address is Weave's choice (kube-utils getKubePeers): its IPv4 InternalIP,
else its IPv4 ExternalIP, else none (an IPv6-only node is not a peer, but is still a
node: its peer is not reclaimed). `NodeWatch` keeps the Node list as a reflector
tells it (lists and watch events, as dicts in the API's JSON shape) and says after
each change what the gossip service must do: connect to new addresses, forget those
whose Node went or moved (the first change replaces whatever targets the router had,
as Weave's ReplacePeers), and whether a Node was deleted (time to reclaim).
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class NodeInfo:
    name: str
    address: str  # IPv4, '' when the Node has none


def node_info(node: Mapping[str, Any]) -> NodeInfo | None:
    """Name and peer address of a Node object; None if it has no name."""
    name = (node.get("metadata") or {}).get("name")
    if not name:
        return None
    found: dict[str, str] = {}
    for addr in (node.get("status") or {}).get("addresses") or ():
        try:
            ip = ipaddress.ip_address(str(addr.get("address", "")))
        except ValueError:
            continue
        if ip.version == 4:
            found[addr.get("type", "")] = str(ip)  # the last of a type wins, as in Weave's loop
    return NodeInfo(name, found.get("InternalIP") or found.get("ExternalIP") or "")


def peer_addresses(nodes: Iterable[NodeInfo]) -> list[str]:
    """What `weave kube-peers list` prints: every Node's address, in list order."""
    return [n.address for n in nodes if n.address]


@dataclass(frozen=True)
class TargetChange:
    connect: tuple[str, ...] = ()
    forget: tuple[str, ...] = ()
    replace: bool = False        # connect --replace: forget every other target first
    deleted: tuple[str, ...] = ()  # Nodes gone in this change

    def __bool__(self) -> bool:
        return bool(self.connect or self.forget or self.replace or self.deleted)


class NodeWatch:
    def __init__(self, my_node: str) -> None:
        self.my_node = my_node
        self.nodes: dict[str, NodeInfo] = {}
        self.resource_version = ""
        self.synced = False          # listed at least once
        self.targets: frozenset[str] = frozenset()  # what the router was told
        self._told = False

    def on_list(self, items: Iterable[Mapping[str, Any]], resource_version: str) -> TargetChange:
        before = set(self.nodes)
        self.nodes = {i.name: i for i in filter(None, map(node_info, items))}
        self.resource_version, self.synced = resource_version, True
        return self._change(tuple(sorted(before - set(self.nodes))))

    def on_event(self, event_type: str, obj: Mapping[str, Any]) -> TargetChange:
        version = (obj.get("metadata") or {}).get("resourceVersion")
        self.resource_version = str(version or self.resource_version)
        info = node_info(obj)
        if event_type == "BOOKMARK" or info is None:
            return TargetChange()
        if event_type == "DELETED":
            gone = self.nodes.pop(info.name, None)
            return self._change((info.name,) if gone else ())
        self.nodes[info.name] = info
        return self._change(())

    def wanted(self) -> frozenset[str]:
        """Every other Node's address (ours would be a connection to ourselves)."""
        return frozenset(n.address for n in self.nodes.values() if n.address and n.name != self.my_node)

    def _change(self, deleted: tuple[str, ...]) -> TargetChange:
        wanted = self.wanted()
        if not self._told:
            self._told, self.targets = True, wanted
            return TargetChange(connect=tuple(sorted(wanted)), replace=True, deleted=deleted)
        change = TargetChange(connect=tuple(sorted(wanted - self.targets)),
                              forget=tuple(sorted(self.targets - wanted)), deleted=deleted)
        self.targets = wanted
        return change

    def retell(self) -> TargetChange:
        """Everything again, as a replace (after the gossip service restarted or refused)."""
        self._told = False
        return self._change(())
