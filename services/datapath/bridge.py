"""The `weave` Linux bridge in Weave Net's "bridge" (pcap, non-fastdp) mode
(weave:net/bridge.go `bridgeImpl`):

    (container vethwepl*) -+ weave +- (vethwe-bridge) ---- (vethwe-pcap)
                                                            ^ the datapath captures and
                                                              injects frames here

Settings, as Weave makes them:
- MAC = the peer name, so `weave` reports the peer name as the bridge MAC and a
  restarted router finds its old name there (weave:net/uuid.go).
- MTU 65535 by default. Weave reaches it by attaching a temporary `dummy` device of that
  MTU (old kernels refused a bridge MTU above its ports'). This kernel has no `dummy`;
  we set the bridge MTU directly after creating it, which kernels >= 4.17 accept and
  which also pins it ("set by user": the bridge no longer shrinks to its smallest port
  when a container veth of a lower MTU joins, as it would if the MTU came with the
  create message or from a port). If the kernel refuses (EINVAL, old kernels), the
  vethwe-bridge port, created with the wanted MTU, pulls the bridge up to it instead.
- tx checksum offload off on the bridge (ethtool ioctl), so frames the host sends into
  the overlay (after `weave expose`) are captured with complete checksums. If the
  ioctl is refused the bridge still works; the reason is returned in `warnings`.
- neighbour sysctls base_reachable_time 5, delay_first_probe_time 2, ucast_solicit 1
  (weave:net/arp.go) and IPv6 accept_ra 0 (no router advertisements picked up from
  containers); the bridge is brought up.
`ensure_bridge` is idempotent: it only writes what differs, and re-creates a missing
half of the vethwe pair. All functions take the host namespace to act in (`None`: the
calling thread's); all block.
"""
from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass

from shared.netlink import IPRoute
from shared.netlink import NetlinkError

from services.datapath.netns import BadRequest, Conflict, Namespace, using_namespace
from services.datapath.veth import (check_mac, configure_arp_cache, create_veth, delete_link, find_link, link_kind,
                                    require_link, set_tx_checksum_off)

from shared.weave.docker_veth import HOST_PREFIX

log = logging.getLogger(__name__)

BRIDGE = "weave"
BRIDGE_PORT = "vethwe-bridge"  # the overlay's port on the bridge
PCAP_PORT = "vethwe-pcap"  # its peer: where the datapath captures and injects
CONTAINER_VETH_PREFIX = "vethwepl"  # host ends of container veths (see attach.py)
DOCKER_VETH_PREFIX = HOST_PREFIX  # host ends of the Docker plugin's endpoints (Weave's plugin names, endpoints.py)
PORT_PREFIXES = (CONTAINER_VETH_PREFIX, DOCKER_VETH_PREFIX)
"""Bridge ports that lead into a container."""
DEFAULT_MTU = 65535  # Weave's bridge-mode default (config.MTU == 0)
MIN_MTU = 68  # the IPv4 minimum
IFF_UP = 0x1
NOT_LAUNCHED = "bridge not present; did you launch weave?"

Host = Namespace | str | int | os.PathLike | None


@dataclass(frozen=True)
class BridgeState:
    """What the bridge looks like now."""

    name: str
    mac: str
    mtu: int
    ifindex: int
    up: bool
    pcap_ifname: str  # the capture/inject interface, or "" when the vethwe pair is missing
    warnings: tuple[str, ...] = ()  # settings that could not be applied, with the reason


def mac_of_peer_name(peer_name: str | int) -> str:
    """The bridge MAC for a peer name (`aa:00:00:00:00:01`, or a 48-bit int such as a
    gossip `PeerName`): lower-case and unicast, else BadRequest."""
    if isinstance(peer_name, int) and not isinstance(peer_name, bool) and 0 <= peer_name < 1 << 48:
        peer_name = ":".join(f"{b:02x}" for b in int(peer_name).to_bytes(6, "big"))
    return check_mac(str(peer_name), "peer name")


def ensure_bridge(host: Host = None, *, peer_name: str | int, mtu: int = DEFAULT_MTU,
                  name: str = BRIDGE) -> BridgeState:
    """Create or repair the bridge and its vethwe pair with Weave's settings (module
    docstring). Raises BadRequest (peer name, MTU), Conflict (`name` exists and is not a
    bridge, or the vethwe names are taken by something else)."""
    mac = mac_of_peer_name(peer_name)
    if not MIN_MTU <= mtu <= 65535:
        raise BadRequest(f"MTU {mtu} is out of range: use {MIN_MTU}..65535", mtu=mtu)
    with using_namespace(host) as ns, ns.iproute() as ipr:
        index = _ensure_bridge_link(ipr, name, mac, mtu)
        _ensure_port(ipr, index, mtu)
        warnings = [w for w in (set_tx_checksum_off(ns, name),) if w]
        _ensure_up(ipr, index)
        warnings += _configure_sysctls(ns, name)
        for w in warnings:
            log.warning("bridge %s: %s", name, w)
        return _state(ipr, name, tuple(warnings))


def bridge_state(host: Host = None, name: str = BRIDGE) -> BridgeState:
    """The bridge as it is; NotFound when it does not exist."""
    with using_namespace(host) as ns, ns.iproute() as ipr:
        return _state(ipr, name, ())


def bridge_link(ipr: IPRoute, name: str = BRIDGE) -> dict:
    """The link message of bridge `name` in ipr's namespace; NotFound / Conflict otherwise."""
    link = require_link(ipr, name, NOT_LAUNCHED)
    if link_kind(link) != "bridge":
        raise Conflict(f"device {name} is not a bridge: run weave reset", ifname=name)
    return link


def destroy_bridge(host: Host = None, *, name: str = BRIDGE) -> list[str]:
    """Remove the bridge, the vethwe pair and the container veths on the bridge (as
    `weave reset` does). Idempotent; returns the names deleted."""
    deleted: list[str] = []
    with using_namespace(host) as ns, ns.iproute() as ipr:
        bridge = find_link(ipr, name)
        if bridge is not None and link_kind(bridge) != "bridge":
            bridge = None  # not ours: leave it alone
        names = [BRIDGE_PORT, PCAP_PORT]
        if bridge is not None:
            names[:0] = [link.get("ifname") for link in ipr.get_links() if link.get("master") == bridge["index"]
                         and link.get("ifname").startswith(PORT_PREFIXES)]
            names.append(name)
        for ifname in names:
            if delete_link(ipr, ifname):  # False for the peer of a veth deleted just before
                deleted.append(ifname)
    return deleted


def _ensure_bridge_link(ipr: IPRoute, name: str, mac: str, mtu: int) -> int:
    link = find_link(ipr, name)
    if link is None:
        ipr.link("add", ifname=name, kind="bridge", address=mac)
        link = require_link(ipr, name, "it vanished while being created")
    elif link_kind(link) != "bridge":
        raise Conflict(f"device {name} exists and is not a bridge: run weave reset", ifname=name)
    index = link["index"]
    if link.get("address") != mac:
        ipr.link("set", index=index, address=mac)
    if link.get("mtu") != mtu:
        try:
            ipr.link("set", index=index, mtu=mtu)
        except NetlinkError as exc:  # old kernel: the port below raises it instead
            if exc.code != errno.EINVAL:
                raise
    return index


def _ensure_port(ipr: IPRoute, bridge: int, mtu: int) -> None:
    """vethwe-bridge on the bridge <-> vethwe-pcap, both up, both of MTU `mtu`."""
    port = find_link(ipr, BRIDGE_PORT)
    if port is not None and link_kind(port) != "veth":
        raise Conflict(f"device {BRIDGE_PORT} exists and is not a veth: run weave reset", ifname=BRIDGE_PORT)
    if port is None:
        delete_link(ipr, PCAP_PORT)  # the lone half of a pair from an interrupted run
        create_veth(ipr, BRIDGE_PORT, PCAP_PORT, mtu=mtu, master=bridge)
        port = require_link(ipr, BRIDGE_PORT, "it vanished while being created")
    pcap = require_link(ipr, PCAP_PORT, "run weave reset")
    if pcap.get("IFLA_LINK") != port["index"] or pcap.get("IFLA_LINK_NETNSID") is not None:
        raise Conflict(f"{PCAP_PORT} is not the peer of {BRIDGE_PORT}: run weave reset", ifname=PCAP_PORT)
    if port.get("master") != bridge:
        ipr.link("set", index=port["index"], master=bridge)
    for link in (port, pcap):
        if link.get("mtu") != mtu:
            ipr.link("set", index=link["index"], mtu=mtu)
        _ensure_up(ipr, link["index"], link)


def _ensure_up(ipr: IPRoute, index: int, link: dict | None = None) -> None:
    link = link or ipr.get_links(index)[0]
    if not link["flags"] & IFF_UP:
        ipr.link("set", index=index, state="up")


def _configure_sysctls(ns: Namespace, name: str) -> list[str]:
    configure_arp_cache(ns, name)
    try:
        ns.ensure_sysctl(f"net/ipv6/conf/{name}/accept_ra", "0")
    except FileNotFoundError:
        return ["IPv6 is disabled here: accept_ra left alone"]
    return []


def _state(ipr: IPRoute, name: str, warnings: tuple[str, ...]) -> BridgeState:
    link = bridge_link(ipr, name)
    pcap = find_link(ipr, PCAP_PORT)
    return BridgeState(name=name, mac=link.get("address"), mtu=link.get("mtu"), ifindex=link["index"],
                       up=bool(link["flags"] & IFF_UP), pcap_ifname=PCAP_PORT if pcap else "",
                       warnings=warnings)
