"""The weave reporter (sans-I/O): the router's /report -> the Overlay topology.

As Scope's probe/overlay/weave.go: a node `#<peer name>` per peer the router knows
(peers without a probe show up too), with `weave_peer_name`/`weave_peer_nick_name` and
an edge along each of its outbound connections; our own peer's node also carries the
router's version, encryption, protocol range, discovery, counts, trusted subnets, the
IPAM, DNS, proxy and plugin properties, the multicolumn connections table, and this
host as parent; with IPAM, the default subnet as its `local_networks`.

Ours, on our own peer's node (docs/scope.md): a `weave_py_links_table_` row per
established link (remote peer, overlay carrying it: `weave-py-vxlan` fastpath,
`fast-sleeve` or `sleeve`; encryption; MTU; state), `weave_py_overlay_to_<peer>` the
overlay of each link, and the flows npc blocked (a `weave_py_blocked_table_` row each and
their count in `weave_py_blocked_count`).
"""
from __future__ import annotations

import time
from typing import Any

from services.scope.ids import make_host_node_id, make_overlay_node_id
from services.scope.probe import templates as t
from services.scope.report import Node, Topology
from shared.schemas.npc import BlockedFlow


class OverlayReporter:
    def __init__(self, hostname: str) -> None:
        self.host_id = make_host_node_id(hostname)

    def report(self, status: dict[str, Any] | None, blocked: list[BlockedFlow], now: int) -> Topology:
        """`status`: the router's /report JSON (None while it does not answer: only the
        templates then, as Scope's empty status cache gives)."""
        topo = Topology(metadata_templates=t.OVERLAY_METADATA, table_templates=t.OVERLAY_TABLES)
        router = (status or {}).get("Router") or {}
        ours = router.get("Name", "")
        for peer in router.get("Peers") or ():
            node = Node(make_overlay_node_id(peer["Name"]), "overlay", latest={
                t.WEAVE_PEER_NAME: (now, peer["Name"]), t.WEAVE_PEER_NICKNAME: (now, peer.get("NickName", ""))},
                adjacency=[make_overlay_node_id(c["Name"]) for c in peer.get("Connections") or () if c.get("Outbound")])
            if peer["Name"] == ours:
                node = self._ours(node, status, peer, blocked, now)
            topo.add_node(node)
        ipam = (status or {}).get("IPAM")
        if ours and ipam:
            topo.add_node(Node(make_overlay_node_id(ours), "overlay",
                               sets={t.LOCAL_NETWORKS: (ipam.get("DefaultSubnet", ""),)}))
        return topo

    def _ours(self, node: Node, status: dict, peer: dict, blocked: list[BlockedFlow], now: int) -> Node:
        router = status["Router"]
        latest = {t.HOST_NODE_ID: self.host_id, t.WEAVE_VERSION: str(status.get("Version", "")),
                  t.WEAVE_ENCRYPTION: _enabled(router.get("Encryption")),
                  t.WEAVE_PEER_DISCOVERY: _enabled(router.get("PeerDiscovery")),
                  t.WEAVE_PROTOCOL: _protocol(router), t.WEAVE_TARGET_COUNT: str(len(router.get("Targets") or ())),
                  t.WEAVE_CONNECTION_COUNT: str(len(router.get("Connections") or ())),
                  t.WEAVE_PEER_COUNT: str(len(router.get("Peers") or ())),
                  t.WEAVE_PROXY_STATUS: "not running", t.WEAVE_PLUGIN_STATUS: "not running"}
        latest.update(_ipam(status.get("IPAM")))
        latest.update(_dns(status.get("DNS")))
        latest.update(_connections_table(router.get("Connections") or ()))
        latest.update(_links(router.get("Connections") or (), peer))
        latest.update(_blocked(blocked))
        return node.merge(Node(node.id, "overlay", latest={k: (now, v) for k, v in latest.items()},
                               sets={t.WEAVE_TRUSTED_SUBNETS: router.get("TrustedSubnets") or ()},
                               parents={"host": (self.host_id,)}))


def _enabled(flag: Any) -> str:
    return "enabled" if flag else "disabled"


def _protocol(router: dict) -> str:
    lo, hi = router.get("ProtocolMinVersion", 0), router.get("ProtocolMaxVersion", 0)
    return str(lo) if lo == hi else f"{lo}..{hi}"


def _ipam(ipam: dict | None) -> dict[str, str]:
    if not ipam:
        return {}
    return {t.WEAVE_IPAM_STATUS: ipam_status(ipam), t.WEAVE_IPAM_RANGE: ipam.get("Range", ""),
            t.WEAVE_IPAM_DEFAULT_SUBNET: ipam.get("DefaultSubnet", "")}


def ipam_status(ipam: dict) -> str:
    """Scope's getIPAMStatus."""
    entries = ipam.get("Entries") or ()
    if entries:
        if not any(e.get("Size", 0) > 0 and e.get("IsKnownPeer") for e in entries):
            return "all ranges owned by unreachable peers"
        return "waiting for grant" if ipam.get("PendingAllocates") else "ready"
    paxos = ipam.get("Paxos")
    if paxos:
        if paxos.get("Elector"):
            return f"awaiting consensus (quorum: {paxos.get('Quorum', 0)}, known: {paxos.get('KnownNodes', 0)})"
        return "priming"
    return "idle"


def _dns(dns: dict | None) -> dict[str, str]:
    if not dns:
        return {}
    live = sum(1 for e in dns.get("Entries") or () if not e.get("Tombstone"))
    return {t.WEAVE_DNS_DOMAIN: dns.get("Domain", ""), t.WEAVE_DNS_UPSTREAM: ", ".join(dns.get("Upstream") or ()),
            t.WEAVE_DNS_TTL: str(dns.get("TTL", 0)), t.WEAVE_DNS_ENTRY_COUNT: str(live)}


def _connections_table(conns) -> dict[str, str]:
    out: dict[str, str] = {}
    for c in conns:
        arrow = "->" if c.get("Outbound") else "<-"
        out.update(t.table_row(t.WEAVE_CONNECTIONS_PREFIX, c.get("Address", ""), {
            t.WEAVE_CONN_CONNECTION: f"{arrow} {c.get('Address', '')}", t.WEAVE_CONN_STATE: c.get("State", ""),
            t.WEAVE_CONN_INFO: c.get("Info", "")}))
    return out


def _links(conns, peer: dict) -> dict[str, str]:
    """A row per connection that has an overlay: the router's Connections name the
    overlay (Attrs), our peer's Connections name the remote peer (joined by address)."""
    remote = {c.get("Address"): c for c in peer.get("Connections") or ()}
    out: dict[str, str] = {}
    for c in conns:
        attrs = c.get("Attrs") or {}
        if not attrs.get("name"):
            continue
        other = remote.get(c.get("Address"), {})
        name = other.get("Name") or c.get("Address", "")
        label = f"{name}({other['NickName']})" if other.get("NickName") else name
        out.update(t.table_row(t.LINKS_PREFIX, name, {
            t.LINK_PEER: label, t.LINK_OVERLAY: attrs["name"],
            t.LINK_ENCRYPTED: "true" if attrs.get("encrypted") else "false",
            t.LINK_MTU: str(attrs.get("mtu", "")), t.LINK_STATE: c.get("State", "")}))
        out[t.LINK_OVERLAY_TO + name] = attrs["name"]
    return out


def _blocked(blocked: list[BlockedFlow]) -> dict[str, str]:
    out = {t.BLOCKED_COUNT_KEY: str(len(blocked))}
    for b in blocked:
        flow = f"{b.src}:{b.sport} -> {b.dst}:{b.dport}"
        out.update(t.table_row(t.BLOCKED_PREFIX, f"{b.protocol} {flow}", {
            t.BLOCKED_FLOW: flow, t.BLOCKED_PROTOCOL: b.protocol, t.BLOCKED_COUNT: str(b.count),
            t.BLOCKED_WHEN: time.strftime("%H:%M:%S", time.gmtime(b.at_unix))}))
    return out
