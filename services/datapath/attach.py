"""Containers on the weave bridge, and the bridge's own addresses: the datapath half of
`weave attach / detach / ps / expose / hide` (weave:net/veth.go AttachContainer and
DetachContainer, weave:net/expose.go, weave:net/netdev.go). IPAM, DNS and iptables
are other services' business; these functions only touch devices, addresses, routes.

Contracts:
- Addresses are IPv4 interfaces: `("10.32.0.1", 12)` pairs, `"10.32.0.1/12"` strings
  or `ipaddress.IPv4Interface`s. An address is identified by its IP alone (as Weave's
  `contains`): re-adding an IP with another prefix length is a no-op.
- A container has one weave interface, `ifname` (ethwe) inside its namespace, whose
  host end is `vethwepl<id>` on the bridge. `<id>` is the low 28 bits of the container
  namespace's inode in hex: netns inodes are 0xF0000000 plus a unique index, so the
  name is 15 characters, unique among live namespaces, and the same whether the
  container was named by namespace name, path or pid. (Weave uses the pid, cut to 7
  characters, which is neither unique nor stable across names.) A Docker plugin
  endpoint's interface (endpoints.py) is made before its container exists, so its host
  end keeps Weave's plugin name, `vethwl<endpoint id>`: such an interface is ours too
  (attach adopts it, ps lists it), found as the peer of the container's `ifname`.
- Unlike Weave, the container's ethwe keeps the kernel's offloads (tx checksum, TSO):
  the datapath captures with virtio-net headers and moves GSO superframes whole
  between weave-py peers (sleeve/offload.py). Its gso_max_size is set to GSO_MAX_SIZE
  (the kernel's default; older releases set 60000).
- `attach` is all or nothing per call: on any error it deletes the veth it created, or
  removes the addresses it added to an existing one, then re-raises.
- An IP held by another attached container, or exposed on the bridge, is a Conflict.
  Callers serialize attach/detach per host (the datapath service does): two concurrent
  attaches of one IP could both pass that check.
- All block; all take the host namespace (`None`: the calling thread's).
"""
from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface

from shared.netlink import IPRoute
from shared.netlink import NetlinkError

from services.datapath.bridge import BRIDGE, CONTAINER_VETH_PREFIX, PORT_PREFIXES, Host, bridge_link
from services.datapath.netns import (NETNS_RUN_DIR, BadRequest, Conflict, DatapathError, Namespace,
                                     NotFound, open_namespace, using_namespace)
from services.datapath.sleeve.offload import GSO_MAX_SIZE
from services.datapath.veth import (announce, check_ifname, check_mac, configure_arp_cache, create_veth,
                                    delete_link, find_link)

log = logging.getLogger(__name__)

CONTAINER_IFNAME = "ethwe"
EXPOSE = "weave:expose"  # how `weave ps` names the bridge's own addresses
MULTICAST = ipaddress.IPv4Network("224.0.0.0/4")
RT_SCOPE_LINK = 253

Addr = tuple[str, int] | str | IPv4Interface  # ("10.32.0.1", 12) | "10.32.0.1/12"


@dataclass(frozen=True)
class ContainerInterface:
    """A container's weave interface as the kernel has it, or the bridge (weave:expose);
    containers.py answers the bus with it as a `weave ps` line (schemas' Attachment)."""

    container: str  # as the caller named it (attach/detach), else the namespace name or a pid (ps)
    mac: str  # of the interface inside the container; the bridge's for weave:expose
    cidrs: tuple[str, ...]  # e.g. "10.32.0.1/12", in the kernel's order
    ifname: str  # interface inside the container; the bridge for weave:expose
    host_ifname: str  # vethwepl<id> on the bridge; the bridge for weave:expose
    netns_inode: int  # the container namespace's identity; 0 for weave:expose


def parse_addrs(addrs: Iterable[Addr]) -> list[IPv4Interface]:
    """Addresses as IPv4Interface, in order, duplicates dropped; BadRequest for anything
    that is not a usable unicast IPv4 address with a prefix length of 1..32."""
    if isinstance(addrs, (str, IPv4Interface)):
        addrs = [addrs]  # a single address passed bare
    out: list[IPv4Interface] = []
    for addr in addrs:
        iface = _parse_addr(addr)
        if iface not in out:
            out.append(iface)
    return out


def _parse_addr(addr: Addr) -> IPv4Interface:
    if not isinstance(addr, (tuple, list, str, IPv4Interface)):
        raise BadRequest(f"invalid address {addr!r}: give an IPv4 CIDR such as 10.32.0.1/12", address=str(addr))
    try:
        if isinstance(addr, (tuple, list)):
            ip, plen = addr
            iface = IPv4Interface(f"{IPv4Address(ip)}/{int(plen)}")
        else:
            iface = IPv4Interface(addr)
    except (ValueError, TypeError) as exc:
        raise BadRequest(f"invalid address {addr!r}: give an IPv4 CIDR such as 10.32.0.1/12",
                         address=str(addr)) from exc
    if iface.network.prefixlen == 0 or (isinstance(addr, str) and "/" not in addr):
        raise BadRequest(f"address {addr!r} needs a prefix length 1..32, e.g. 10.32.0.1/12", address=str(addr))
    if iface.ip.is_multicast or iface.ip.is_loopback or iface.ip.is_unspecified or iface.ip.is_reserved:
        raise BadRequest(f"address {iface} is not a unicast address a container can use", address=str(iface))
    return iface


def host_ifname_for(ns: Namespace | int) -> str:
    """The bridge-side name of the container's veth (module docstring), for a namespace
    or its inode."""
    inode = ns if isinstance(ns, int) else ns.inode
    return f"{CONTAINER_VETH_PREFIX}{inode & 0xFFFFFFF:07x}"


def host_ports(host: Host = None) -> set[str]:
    """Names of the container veths (vethwepl*) in the host namespace. In the calling
    thread's own namespace (host None) from libc's interface list (one netlink dump in C,
    tens of microseconds: the datapath asks whenever a link is deleted); elsewhere
    through a netlink dump (shared/netlink.py), which decodes every link's attributes."""
    if host is None:
        names = [name for _, name in socket.if_nameindex()]
    else:
        with using_namespace(host) as hns, hns.iproute() as ipr:
            names = [link.get("ifname") for link in ipr.get_links()]
    return {n for n in names if n.startswith(CONTAINER_VETH_PREFIX)}


def attach(container: Host, addrs: Iterable[Addr], *, host: Host = None, mac: str | None = None,
           mtu: int | None = None, multicast_route: bool = True, ifname: str = CONTAINER_IFNAME,
           bridge: str = BRIDGE) -> ContainerInterface:
    """Connect `container` to the bridge with `addrs` (adding them when it is attached
    already). New veths get `mtu` (None: the bridge's) and `mac` (None: random). Adds the
    224.0.0.0/4 route via `ifname` unless `multicast_route` is False. Raises BadRequest
    (arguments; the container shares the host's namespace), NotFound (container, bridge),
    Conflict (an IP in use elsewhere; an `ifname` that is not ours; another MAC)."""
    cidrs = parse_addrs(addrs)
    check_ifname(ifname)
    mac = check_mac(mac) if mac is not None else None
    with using_namespace(host) as hns, using_namespace(container) as cns, \
            hns.iproute() as hipr, cns.iproute() as cipr:
        if cns.key == hns.key:
            raise BadRequest(f"container {cns.ident} is in the host's network namespace (--net=host?): "
                             "it cannot be attached", container=cns.ident)
        br = bridge_link(hipr, bridge)
        _check_free(hns, cns, cidrs, bridge)
        link = find_link(cipr, ifname)
        created = link is None
        if created:
            link = _create_veth(hipr, cns, cipr, ifname, br, mtu or br.get("mtu"), mac)
        else:
            _check_ours(hipr, cns, link, br["index"], mac)
        added: list[IPv4Interface] = []
        try:
            _configure(cns, cipr, link, cidrs, added, multicast_route)
        except BaseException:
            _roll_back(hipr, cns, cipr, link["index"], created, added)
            raise
        for iface in added:
            announce(cns, ifname, iface.ip, link.get("address"))
        return _describe(_label(cns), cns, cipr, link["index"])


def detach(container: Host, addrs: Iterable[Addr] | None = None, *, host: Host = None,
           ifname: str = CONTAINER_IFNAME, bridge: str = BRIDGE) -> ContainerInterface | None:
    """Remove `addrs` from the container's weave interface (IPs it lacks are ignored), or
    the whole interface when `addrs` is None or no address is left (as Weave). Returns
    what is left, or None when the interface is gone. NotFound when the container is not
    attached; Conflict when its `ifname` is not a port of our bridge."""
    cidrs = parse_addrs(addrs) if addrs is not None else None
    check_ifname(ifname)
    with using_namespace(host) as hns, using_namespace(container) as cns, \
            hns.iproute() as hipr, cns.iproute() as cipr:
        link = find_link(cipr, ifname)
        if link is None:
            raise NotFound(f"container {cns.ident} has no {ifname}: it is not attached to weave",
                           container=cns.ident, ifname=ifname)
        _check_ours(hipr, cns, link, bridge_link(hipr, bridge)["index"], None)
        if cidrs is not None:
            _del_addresses(cipr, link["index"], cidrs)
            if _addresses(cipr, link["index"]):
                return _describe(_label(cns), cns, cipr, link["index"])
        delete_link(cipr, ifname)  # takes the host end and the multicast route with it
        return None


def list_attached(host: Host = None, *, bridge: str = BRIDGE) -> list[ContainerInterface]:
    """`weave ps`: weave:expose first (only when the bridge has addresses), then every
    container with a veth on the bridge, found through the veth's peer namespace id
    among named namespaces and processes. A container whose namespace can no longer be
    found (it is being torn down) is left out."""
    with using_namespace(host) as hns, hns.iproute() as ipr:
        br = bridge_link(ipr, bridge)
        ports = [link for link in ipr.get_links() if link.get("master") == br["index"]
                 and link.get("ifname").startswith(PORT_PREFIXES)
                 and link.get("IFLA_LINK_NETNSID") is not None]
        found = _namespaces_by_nsid(ipr, {p.get("IFLA_LINK_NETNSID") for p in ports})
        try:
            out = [_describe_port(port, *found[port.get("IFLA_LINK_NETNSID")])
                   for port in ports if port.get("IFLA_LINK_NETNSID") in found]
        finally:
            for _, ns in found.values():
                ns.close()
        exposed = _bridge_record(ipr, br)
        return ([exposed] if exposed.cidrs else []) + [a for a in out if a is not None]


def expose(addrs: Iterable[Addr], *, host: Host = None, bridge: str = BRIDGE) -> ContainerInterface:
    """Put `addrs` on the bridge so the host reaches the weave network (`weave expose`;
    its NAT rules are host_iptables.py's, set by the service). Idempotent; returns the
    bridge record."""
    cidrs = parse_addrs(addrs)
    with using_namespace(host) as hns, hns.iproute() as ipr:
        br = bridge_link(ipr, bridge)
        added: list[IPv4Interface] = []
        _add_addresses(ipr, br["index"], cidrs, added)
        for iface in added:
            announce(hns, bridge, iface.ip, br.get("address"))
        return _bridge_record(ipr, br)


def hide(addrs: Iterable[Addr], *, host: Host = None, bridge: str = BRIDGE) -> ContainerInterface:
    """Remove `addrs` from the bridge (`weave hide`); absent ones are ignored."""
    cidrs = parse_addrs(addrs)
    with using_namespace(host) as hns, hns.iproute() as ipr:
        br = bridge_link(ipr, bridge)
        _del_addresses(ipr, br["index"], cidrs)
        return _bridge_record(ipr, br)


def check_free(container: Host, addrs: Iterable[Addr], *, host: Host = None, bridge: str = BRIDGE) -> None:
    """Conflict if one of `addrs` is held by another container or exposed on the bridge
    (what `attach` checks first; callers that reserve addresses elsewhere ask before)."""
    cidrs = parse_addrs(addrs)
    with using_namespace(host) as hns, using_namespace(container) as cns:
        _check_free(hns, cns, cidrs, bridge)


# -- attach steps ----------------------------------------------------------------------
def _check_free(hns: Namespace, cns: Namespace, cidrs: list[IPv4Interface], bridge: str) -> None:
    owners = {IPv4Interface(c).ip: a.container for a in list_attached(hns, bridge=bridge)
              if a.netns_inode != cns.inode for c in a.cidrs}
    for iface in cidrs:
        if iface.ip in owners:
            raise Conflict(f"address {iface.ip} is already attached to {owners[iface.ip]}: detach it there "
                           "first or pick another address", address=str(iface), owner=owners[iface.ip])


def _create_veth(hipr: IPRoute, cns: Namespace, cipr: IPRoute, ifname: str, br: dict, mtu: int,
                 mac: str | None) -> dict:
    host_name = host_ifname_for(cns)
    create_veth(hipr, host_name, ifname, mtu=mtu, master=br["index"], peer_ns=cns, peer_mac=mac)
    try:
        configure_arp_cache(cns, ifname)
        link = find_link(cipr, ifname)
        cipr.link("set", index=link["index"], gso_max_size=GSO_MAX_SIZE)
        return find_link(cipr, ifname)
    except BaseException:
        delete_link(hipr, host_name)
        raise


def _check_ours(hipr: IPRoute, cns: Namespace, link: dict, bridge_index: int, mac: str | None) -> None:
    """`link` (inside the container) must be the peer of our vethwepl port on the bridge,
    or of a Docker plugin endpoint's vethwl port."""
    port = find_link(hipr, host_ifname_for(cns)) or _docker_port(hipr, link)
    ifname = link.get("ifname")
    if port is None or port.get("master") != bridge_index or port.get("IFLA_LINK") != link["index"] \
            or port.get("IFLA_LINK_NETNSID") is None:
        raise Conflict(f"{ifname} in container {cns.ident} is not attached to the weave bridge; "
                       f"remove it or pass another ifname", container=cns.ident, ifname=ifname)
    if mac is not None and link.get("address") != mac:
        raise Conflict(f"{ifname} in container {cns.ident} has MAC {link.get('address')}, not {mac}: "
                       "detach it first to change the MAC", container=cns.ident, mac=link.get("address"))


def _docker_port(hipr: IPRoute, link: dict) -> dict | None:
    """The plugin endpoint's host end whose peer is `link` (None if there is none)."""
    peer = link.get("IFLA_LINK")
    if not peer:
        return None
    try:
        port = hipr.get_links(peer)[0]
    except (NetlinkError, IndexError):
        return None
    return port if port.get("ifname", "").startswith(PORT_PREFIXES[1]) else None


def _configure(cns: Namespace, cipr: IPRoute, link: dict, cidrs: list[IPv4Interface],
               added: list[IPv4Interface], multicast_route: bool) -> None:
    """Addresses, link up, then (last, as Weave) the multicast route. Connected routes
    for each address's subnet come with the address once the link is up."""
    _add_addresses(cipr, link["index"], cidrs, added)
    cipr.link("set", index=link["index"], state="up")
    if multicast_route:
        _add_route(cipr, link["index"], MULTICAST)


def _roll_back(hipr: IPRoute, cns: Namespace, cipr: IPRoute, index: int, created: bool,
               added: list[IPv4Interface]) -> None:
    try:
        if created:
            delete_link(hipr, host_ifname_for(cns))
        else:
            _del_addresses(cipr, index, added)
    except (OSError, NetlinkError) as exc:  # keep the original error; say what is left
        log.error("container %s: roll back failed, leftovers may remain: %s", cns.ident, exc)


# -- addresses and routes ----------------------------------------------------------------
def _addresses(ipr: IPRoute, index: int) -> list[IPv4Interface]:
    out = []
    for msg in ipr.get_addr(family=socket.AF_INET, index=index):
        ip = msg.get("IFA_LOCAL") or msg.get("IFA_ADDRESS")
        out.append(IPv4Interface(f"{ip}/{msg['prefixlen']}"))
    return out


def _add_addresses(ipr: IPRoute, index: int, cidrs: list[IPv4Interface], added: list[IPv4Interface]) -> None:
    """Add the IPs `index` lacks, appending each to `added` as soon as it is on."""
    have = {iface.ip for iface in _addresses(ipr, index)}
    for iface in cidrs:
        if iface.ip in have:
            continue
        try:
            ipr.addr("add", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:  # added concurrently: nothing to undo either
                raise
            continue
        added.append(iface)


def _del_addresses(ipr: IPRoute, index: int, cidrs: Iterable[IPv4Interface]) -> None:
    """Remove these IPs (whatever their prefix length on the device); absent ones are fine."""
    wanted = {IPv4Interface(c).ip for c in cidrs}
    for iface in _addresses(ipr, index):
        if iface.ip not in wanted:
            continue
        try:
            ipr.addr("del", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
        except NetlinkError as exc:
            if exc.code != errno.EADDRNOTAVAIL:
                raise


def _add_route(ipr: IPRoute, index: int, dst: ipaddress.IPv4Network) -> None:
    try:
        ipr.route("add", dst=str(dst.network_address), dst_len=dst.prefixlen, oif=index, scope=RT_SCOPE_LINK)
    except NetlinkError as exc:
        if exc.code != errno.EEXIST:  # already there (re-attach), or the container made one
            raise


# -- describing --------------------------------------------------------------------------
def _label(ns: Namespace) -> str:
    if ns.name:
        return ns.name
    if ns.pid is not None:
        return str(ns.pid)
    if os.path.dirname(ns.path) == NETNS_RUN_DIR:
        return os.path.basename(ns.path)
    return ns.path


def _describe(label: str, cns: Namespace, cipr: IPRoute, index: int, host_ifname: str = "") -> ContainerInterface:
    link = cipr.get_links(index)[0]
    cidrs = tuple(str(c) for c in _addresses(cipr, index))
    return ContainerInterface(container=label, mac=link.get("address"), cidrs=cidrs, ifname=link.get("ifname"),
                      host_ifname=host_ifname or host_ifname_for(cns), netns_inode=cns.inode)


def _describe_port(port: dict, label: str, cns: Namespace) -> ContainerInterface | None:
    try:
        with cns.iproute() as cipr:
            return _describe(label, cns, cipr, port.get("IFLA_LINK"), port.get("ifname"))
    except NetlinkError as exc:  # the container side vanished meanwhile
        log.info("container %s: no interface %s: %s", label, port.get("IFLA_LINK"), exc)
        return None


def _bridge_record(ipr: IPRoute, br: dict) -> ContainerInterface:
    cidrs = tuple(str(c) for c in _addresses(ipr, br["index"]))
    return ContainerInterface(container=EXPOSE, mac=br.get("address"), cidrs=cidrs, ifname=br.get("ifname"),
                      host_ifname=br.get("ifname"), netns_inode=0)


# -- finding the namespaces behind veth peers ------------------------------------------
def _namespaces_by_nsid(ipr: IPRoute, nsids: set[int]) -> dict[int, tuple[str, Namespace]]:
    """nsid (as ipr's namespace numbers its peers) -> (label, opened namespace), for the
    nsids found among named namespaces first, then every process's namespace."""
    found: dict[int, tuple[str, Namespace]] = {}
    seen: set[int] = set()
    for label, path in _candidates():
        if not nsids - found.keys():
            break
        try:
            inode = os.stat(path).st_ino
            if inode in seen:
                continue
            seen.add(inode)
            ns = open_namespace(path)
        except (OSError, DatapathError):
            continue  # gone meanwhile, or not a namespace
        nsid = (ipr.get_netnsid(fd=ns.fd) or {}).get("nsid")
        if nsid in nsids and nsid not in found:
            found[nsid] = (label, ns)
        else:
            ns.close()
    return found


def _candidates() -> Iterator[tuple[str, str]]:
    for name in sorted(_listdir(NETNS_RUN_DIR)):
        yield name, os.path.join(NETNS_RUN_DIR, name)
    for pid in sorted((int(p) for p in _listdir("/proc") if p.isdigit())):
        yield str(pid), f"/proc/{pid}/ns/net"


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []
