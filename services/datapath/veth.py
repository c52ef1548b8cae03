"""veth pairs and per-interface settings, as Weave Net's net/veth.go, net/arp.go and
net/ethtool.go do them, over netlink (shared/netlink.py), ioctl and /proc/sys.

Every function takes the namespace(s) it acts in explicitly (`Namespace` or an open
`IPRoute` on one); none changes the calling thread's namespace. All block.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import ipaddress
import logging
import re
import socket
import struct

from shared.netlink import IPRoute
from shared.netlink import NetlinkError

from services.datapath.netns import BadRequest, Conflict, Namespace, NotFound

log = logging.getLogger(__name__)

IFNAMSIZ = 16  # names are at most 15 bytes
SIOCETHTOOL = 0x8946
ETHTOOL_GTXCSUM = 0x16
ETHTOOL_STXCSUM = 0x17
ETH_P_ARP = 0x0806
BROADCAST_MAC = b"\xff" * 6
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")

# Neighbour settings Weave puts on the bridge and on every container's ethwe, so a
# container notices quickly when an IP moves to another MAC (weave:net/arp.go).
ARP_CACHE_SYSCTLS = (("base_reachable_time", "5"), ("delay_first_probe_time", "2"),
                     ("ucast_solicit", "1"))


def check_ifname(name: str) -> str:
    """An interface name the kernel accepts, else BadRequest."""
    if not name or len(name.encode()) >= IFNAMSIZ or "/" in name or name.strip() != name or name in (".", ".."):
        raise BadRequest(f"{name!r} is not a valid interface name (1-15 characters, no '/' or spaces)",
                         ifname=name)
    return name


def check_mac(mac: str, what: str = "MAC") -> str:
    """`mac` lower-cased if it is a unicast, non-zero MAC (aa:bb:cc:dd:ee:ff), else BadRequest."""
    text = str(mac).lower()
    if not _MAC.match(text):
        raise BadRequest(f"{what} {mac!r} is not a MAC address like aa:00:00:00:00:01", mac=str(mac))
    if int(text[:2], 16) & 1 or text == "00:00:00:00:00:00":
        raise BadRequest(f"{what} {text} is a multicast or zero MAC; an interface needs a unicast one", mac=text)
    return text


def find_link(ipr: IPRoute, name: str) -> dict | None:
    """The link message of `name` in ipr's namespace, or None."""
    found = ipr.link_lookup(ifname=name)
    return ipr.get_links(found[0])[0] if found else None


def link_kind(link: dict) -> str | None:
    info = link.get("IFLA_LINKINFO")
    return info.get("IFLA_INFO_KIND") if info is not None else None


def delete_link(ipr: IPRoute, name: str) -> bool:
    """Delete `name` if it exists (a veth takes its peer with it). True if deleted."""
    found = ipr.link_lookup(ifname=name)
    if not found:
        return False
    try:
        ipr.link("del", index=found[0])
    except NetlinkError as exc:
        if exc.code != errno.ENODEV:  # lost a race with another deleter: fine
            raise
    return True


def create_veth(ipr: IPRoute, name: str, peer: str, *, mtu: int, master: int,
                peer_ns: Namespace | None = None, peer_mac: str | None = None) -> int:
    """Create veth `name` <-> `peer`, put `name` on bridge index `master` and bring it up.
    The peer is created directly inside `peer_ns` when given (no rename dance), else
    beside `name`; it is left down. Returns name's ifindex. On any failure the pair is
    deleted before the error propagates; `name` already existing raises Conflict."""
    peer_attrs: dict = {"ifname": peer, "mtu": mtu}
    if peer_ns is not None:
        peer_attrs["net_ns_fd"] = peer_ns.fd
    if peer_mac is not None:
        peer_attrs["address"] = peer_mac
    try:
        ipr.link("add", ifname=name, kind="veth", mtu=mtu, peer=peer_attrs)
    except NetlinkError as exc:
        if exc.code == errno.EEXIST:
            raise Conflict(f"device {name} (or {peer}) exists already: detach it or run weave reset",
                           ifname=name, peer=peer) from exc
        raise
    try:
        index = ipr.link_lookup(ifname=name)[0]
        ipr.link("set", index=index, master=master)
        ipr.link("set", index=index, state="up")
        return index
    except BaseException:
        delete_link(ipr, name)
        raise


def configure_arp_cache(ns: Namespace, ifname: str) -> None:
    """Weave's ARP cache settings for `ifname` inside `ns` (weave:net/arp.go)."""
    for key, value in ARP_CACHE_SYSCTLS:
        ns.ensure_sysctl(f"net/ipv4/neigh/{ifname}/{key}", value)


class _EthtoolValue(ctypes.Structure):
    _fields_ = [("cmd", ctypes.c_uint32), ("data", ctypes.c_uint32)]


class _IfReq(ctypes.Structure):  # struct ifreq: 16-byte name, then a 24-byte union
    _fields_ = [("name", ctypes.c_char * IFNAMSIZ), ("data", ctypes.c_void_p), ("pad", ctypes.c_char * 16)]


def _ethtool(ns: Namespace, ifname: str, cmd: int, data: int = 0) -> int:
    value = _EthtoolValue(cmd, data)
    req = _IfReq(ifname.encode(), ctypes.cast(ctypes.pointer(value), ctypes.c_void_p))
    with ns.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock.fileno(), SIOCETHTOOL, req)  # the kernel reads/writes `value` in place
    return value.data


def tx_checksum_on(ns: Namespace, ifname: str) -> bool:
    """Whether tx checksum offload is on for `ifname` in `ns` (ethtool -k: tx-checksumming)."""
    return bool(_ethtool(ns, ifname, ETHTOOL_GTXCSUM))


def set_tx_checksum_off(ns: Namespace, ifname: str) -> str | None:
    """Turn tx checksum offload off (`ethtool -K <if> tx off`, weave:net/ethtool.go).
    Needed because frames captured on vethwe-pcap and sent to another peer must carry
    complete checksums; with offload on, locally generated frames leave the checksum
    to hardware that never sees them. Returns None when done (or already off), else the
    reason it could not be done (the caller logs it; traffic still flows locally)."""
    try:
        if tx_checksum_on(ns, ifname):
            _ethtool(ns, ifname, ETHTOOL_STXCSUM, 0)
    except OSError as exc:
        return f"ethtool tx off on {ifname}: {exc.strerror or exc}"
    return None


def announce(ns: Namespace, ifname: str, ip: ipaddress.IPv4Address, mac: str) -> None:
    """Best effort: broadcast one gratuitous ARP (`arping -U`) for `ip` from `ifname`, so
    peers and containers that cached an old MAC for this IP update at once."""
    hw = bytes.fromhex(mac.replace(":", ""))
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, hw, ip.packed, b"\0" * 6, ip.packed)
    frame = BROADCAST_MAC + hw + struct.pack("!H", ETH_P_ARP) + arp
    try:
        with ns.socket(socket.AF_PACKET, socket.SOCK_RAW, 0) as sock:
            sock.bind((ifname, ETH_P_ARP))
            sock.send(frame)
    except OSError as exc:
        log.info("gratuitous ARP for %s on %s not sent: %s", ip, ifname, exc)


def require_link(ipr: IPRoute, name: str, hint: str) -> dict:
    """The link `name`, else NotFound with `hint` (what the user should do)."""
    link = find_link(ipr, name)
    if link is None:
        raise NotFound(f"device {name} not found: {hint}", ifname=name)
    return link
