"""rtnetlink, sans-I/O: the requests the project makes (links, addresses, routes, bridge
FDB entries, a bridge port's hairpin mode, a namespace's id) and the replies it reads,
as linux/rtnetlink.h, if_link.h, if_addr.h, neighbour.h and net_namespace.h lay them out.
shared/netlink.py is the socket around it.

Replies decode to `Msg`: header fields by key (`msg["index"]`), attributes by their
kernel name (`msg.get("IFLA_MTU")`, `msg.get_attr(...)`) or its short form
(`link.get("mtu")`), nested ones (IFLA_LINKINFO) as Msg too. The calls and the shapes
are the subset of pyroute2's IPRoute the project used, which this replaced (issue 15:
pyroute2 0.9's sync IPRoute ran an event loop per handle, and one handle and a link dump
copied ~3.5 MB of the supervisor's pages in each forked service). Only the attributes
named here are decoded; others are skipped. Requests with a keyword this module does
not know raise TypeError, naming it.
"""
from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Any, Callable

from shared.netlink_wire import (NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE,
                                 NLM_F_REQUEST, attr, attrs, nested)

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE = 24, 25
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30
RTM_NEWNSID, RTM_GETNSID = 88, 90
IFF_UP = 0x1
AF_BRIDGE = 7
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
RT_TABLE_MAIN, RTPROT_STATIC, RTN_UNICAST = 254, 4, 1

IFINFO = struct.Struct("=BxHiII")  # family, type, index, flags, change
IFADDR = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags
NDMSG = struct.Struct("=BxxxiHBB")  # family, ifindex, state, flags, type
RTGEN = struct.Struct("=Bxxx")  # family (padded to 4)

U8, U16, U32, S32 = struct.Struct("=B"), struct.Struct("=H"), struct.Struct("=I"), struct.Struct("=i")
BE16 = struct.Struct("!H")

Request = tuple[int, int, bytes]
"""(message type, flags, body): what shared/netlink.py frames and sends."""


# -- values ------------------------------------------------------------------------
def _mac(raw: memoryview) -> str:
    return ":".join(f"{b:02x}" for b in bytes(raw))


def _ip(raw: memoryview) -> str:
    return str(ipaddress.ip_address(bytes(raw)))


def _name(raw: memoryview) -> str:
    return bytes(raw).split(b"\0", 1)[0].decode()


def _u8(raw: memoryview) -> int:
    return U8.unpack_from(raw)[0]


def _u32(raw: memoryview) -> int:
    return U32.unpack_from(raw)[0]


def _s32(raw: memoryview) -> int:
    return S32.unpack_from(raw)[0]


def _be16(raw: memoryview) -> int:
    return BE16.unpack_from(raw)[0]


def _mac_bytes(mac: str) -> bytes:
    raw = bytes.fromhex(mac.replace(":", ""))
    if len(raw) != 6:
        raise ValueError(f"{mac!r} is not a MAC address")
    return raw


def _ip_bytes(ip: Any) -> bytes:
    return ipaddress.ip_address(str(ip)).packed


# -- decoded messages --------------------------------------------------------------
Table = dict[int, tuple[str, Callable[[memoryview], Any]]]


class Msg:
    """One decoded message (or nested attribute set): header fields and attributes."""

    __slots__ = ("fields", "attrs", "prefix")

    def __init__(self, fields: dict[str, Any], attributes: dict[str, Any], prefix: str) -> None:
        self.fields, self.attrs, self.prefix = fields, attributes, prefix

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]

    def get(self, key: str, default: Any = None) -> Any:
        """A header field, else an attribute by kernel name or short name."""
        if key in self.fields:
            return self.fields[key]
        if not key.isupper():
            key = self.prefix + key.upper()
        return self.attrs.get(key, default)

    def get_attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)

    def __repr__(self) -> str:
        return f"Msg({self.fields}, {self.attrs})"


def _decode_attrs(body: memoryview, offset: int, table: Table) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind, raw in attrs(body, offset):
        known = table.get(kind)
        if known is not None:
            out[known[0]] = known[1](raw)
    return out


_VXLAN: Table = {1: ("IFLA_VXLAN_ID", _u32), 4: ("IFLA_VXLAN_LOCAL", _ip), 7: ("IFLA_VXLAN_LEARNING", _u8),
                 15: ("IFLA_VXLAN_PORT", _be16)}
_INFO_DATA: dict[str, Table] = {"vxlan": _VXLAN}


def _linkinfo(raw: memoryview) -> Msg:
    kind, data = None, None
    for t, value in attrs(raw):
        if t == 1:
            kind = _name(value)
        elif t == 2:
            data = value
    found: dict[str, Any] = {}
    if kind is not None:
        found["IFLA_INFO_KIND"] = kind
        table = _INFO_DATA.get(kind)
        if data is not None and table is not None:
            found["IFLA_INFO_DATA"] = Msg({}, _decode_attrs(data, 0, table), "IFLA_" + kind.upper() + "_")
    return Msg({}, found, "IFLA_INFO_")


_LINK: Table = {1: ("IFLA_ADDRESS", _mac), 2: ("IFLA_BROADCAST", _mac), 3: ("IFLA_IFNAME", _name),
                4: ("IFLA_MTU", _u32), 5: ("IFLA_LINK", _u32), 10: ("IFLA_MASTER", _u32),
                13: ("IFLA_TXQLEN", _u32), 18: ("IFLA_LINKINFO", _linkinfo), 37: ("IFLA_LINK_NETNSID", _s32),
                41: ("IFLA_GSO_MAX_SIZE", _u32)}
_ADDR: Table = {1: ("IFA_ADDRESS", _ip), 2: ("IFA_LOCAL", _ip), 3: ("IFA_LABEL", _name),
                4: ("IFA_BROADCAST", _ip), 8: ("IFA_FLAGS", _u32)}
_NEIGH: Table = {1: ("NDA_DST", _ip), 2: ("NDA_LLADDR", _mac), 7: ("NDA_VNI", _u32), 8: ("NDA_IFINDEX", _u32),
                 9: ("NDA_MASTER", _u32)}
_NSID: Table = {1: ("NETNSA_NSID", _s32)}


def decode(kind: int, body: memoryview) -> Msg | None:
    """A reply message of a type this module reads, else None."""
    if kind in (RTM_NEWLINK, RTM_DELLINK) and len(body) >= IFINFO.size:
        family, ifi_type, index, flags, change = IFINFO.unpack_from(body)
        return Msg({"family": family, "ifi_type": ifi_type, "index": index, "flags": flags, "change": change},
                   _decode_attrs(body, IFINFO.size, _LINK), "IFLA_")
    if kind in (RTM_NEWADDR, RTM_DELADDR) and len(body) >= IFADDR.size:
        family, prefixlen, flags, scope, index = IFADDR.unpack_from(body)
        return Msg({"family": family, "prefixlen": prefixlen, "flags": flags, "scope": scope, "index": index},
                   _decode_attrs(body, IFADDR.size, _ADDR), "IFA_")
    if kind in (RTM_NEWNEIGH, RTM_DELNEIGH) and len(body) >= NDMSG.size:
        family, ifindex, state, flags, ndm_type = NDMSG.unpack_from(body)
        return Msg({"family": family, "ifindex": ifindex, "state": state, "flags": flags, "ndm_type": ndm_type},
                   _decode_attrs(body, NDMSG.size, _NEIGH), "NDA_")
    if kind == RTM_NEWNSID and len(body) >= RTGEN.size:
        return Msg({"family": RTGEN.unpack_from(body)[0]}, _decode_attrs(body, RTGEN.size, _NSID), "NETNSA_")
    return None


# -- requests ----------------------------------------------------------------------
def _refuse(what: str, extra: dict) -> None:
    if extra:
        raise TypeError(f"{what}: unsupported argument(s) {', '.join(sorted(extra))}")


_VXLAN_ARGS = {"vxlan_id": (1, U32.pack), "vxlan_local": (4, _ip_bytes), "vxlan_learning": (7, U8.pack),
               "vxlan_port": (15, BE16.pack)}


def _link_attrs(kw: dict, *, what: str) -> tuple[bytes, int, int]:
    """(attributes, ifi_flags, ifi_change) for the link keywords in `kw` (consumed)."""
    out = []
    flags = change = 0
    if "ifname" in kw:
        out.append(attr(3, kw.pop("ifname").encode() + b"\0"))
    if "address" in kw:
        out.append(attr(1, _mac_bytes(kw.pop("address"))))
    for key, kind in (("mtu", 4), ("master", 10), ("net_ns_fd", 28), ("gso_max_size", 41)):
        if key in kw:
            out.append(attr(kind, U32.pack(kw.pop(key))))
    if "state" in kw:
        state = kw.pop("state")
        if state not in ("up", "down"):
            raise ValueError(f"{what}: state {state!r} is neither 'up' nor 'down'")
        flags, change = (IFF_UP if state == "up" else 0), IFF_UP
    kind = kw.pop("kind", None)
    if kind is not None:
        data = b""
        if kind == "veth" and "peer" in kw:
            peer = dict(kw.pop("peer"))
            peer_attrs, _, _ = _link_attrs(peer, what=what + " peer")
            _refuse(what + " peer", peer)
            data = attr(1, IFINFO.pack(0, 0, 0, 0, 0) + peer_attrs)  # VETH_INFO_PEER
        elif kind == "vxlan":
            data = b"".join(attr(t, pack(kw.pop(k))) for k, (t, pack) in _VXLAN_ARGS.items() if k in kw)
        info = [attr(1, kind.encode() + b"\0")]
        if data:
            info.append(nested(2, data))
        out.append(nested(18, *info))
    return b"".join(out), flags, change


def link(command: str, **kw: Any) -> Request:
    """`ip link add|set|del`: add takes ifname, kind (bridge, veth with peer={...},
    vxlan with vxlan_*), address, mtu; set takes index and any of mtu, master, state,
    address, gso_max_size, net_ns_fd; del takes index."""
    index = kw.pop("index", 0)
    body, flags, change = _link_attrs(kw, what=f"link {command}")
    _refuse(f"link {command}", kw)
    header = IFINFO.pack(socket.AF_UNSPEC, 0, index, flags, change)
    if command == "add":
        return RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, header + body
    if command == "set":
        return RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, header + body
    if command == "del":
        return RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK, header + body
    raise ValueError(f"link: unknown command {command!r}")


def get_link(index: int = 0, ifname: str | None = None) -> Request:
    body = IFINFO.pack(socket.AF_UNSPEC, 0, index, 0, 0)
    if ifname is not None:
        body += attr(3, ifname.encode() + b"\0")
    return RTM_GETLINK, NLM_F_REQUEST, body


def dump_links() -> Request:
    return RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0)


def dump_addrs(family: int = socket.AF_UNSPEC) -> Request:
    return RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, IFADDR.pack(family, 0, 0, 0, 0)


def addr(command: str, *, index: int, address: str, prefixlen: int | None = None, **kw: Any) -> Request:
    """`ip addr add|del ADDRESS/PREFIXLEN dev INDEX` (IFA_LOCAL and IFA_ADDRESS both set,
    no broadcast, as `ip addr add` without `brd`)."""
    _refuse(f"addr {command}", kw)
    ip = ipaddress.ip_address(address)
    family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    body = IFADDR.pack(family, ip.max_prefixlen if prefixlen is None else prefixlen, 0, 0, index)
    body += attr(2, ip.packed) + attr(1, ip.packed)
    if command == "add":
        return RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body
    if command == "del":
        return RTM_DELADDR, NLM_F_REQUEST | NLM_F_ACK, body
    raise ValueError(f"addr: unknown command {command!r}")


def route(command: str, *, dst: str, dst_len: int | None = None, oif: int | None = None,
          gateway: str | None = None, scope: int = 0, **kw: Any) -> Request:
    """`ip route add|replace DST[/LEN] [via GATEWAY] [dev OIF] [scope SCOPE]` in the main
    table (dst may be 'a.b.c.d/n' or 'default')."""
    _refuse(f"route {command}", kw)
    net = ipaddress.ip_network("0.0.0.0/0" if dst == "default" else
                               (dst if dst_len is None else f"{dst}/{dst_len}"), strict=False)
    family = socket.AF_INET if net.version == 4 else socket.AF_INET6
    body = RTMSG.pack(family, net.prefixlen, 0, 0, RT_TABLE_MAIN, RTPROT_STATIC, scope, RTN_UNICAST, 0)
    if net.prefixlen:
        body += attr(1, net.network_address.packed)
    if gateway is not None:
        body += attr(5, _ip_bytes(gateway))
    if oif is not None:
        body += attr(4, U32.pack(oif))
    if command == "add":
        return RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body
    if command == "replace":
        return RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, body
    raise ValueError(f"route: unknown command {command!r}")


def fdb(command: str, *, ifindex: int, lladdr: str, dst: str | None = None, state: int = NUD_PERMANENT,
        flags: int = NTF_SELF, **kw: Any) -> Request:
    """`bridge fdb append|del LLADDR dev IFINDEX dst DST self permanent`."""
    _refuse(f"fdb {command}", kw)
    body = NDMSG.pack(AF_BRIDGE, ifindex, state, flags, 0) + attr(2, _mac_bytes(lladdr))
    if dst is not None:
        body += attr(1, _ip_bytes(dst))
    if command == "append":
        return RTM_NEWNEIGH, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND, body
    if command == "del":
        return RTM_DELNEIGH, NLM_F_REQUEST | NLM_F_ACK, body
    raise ValueError(f"fdb: unknown command {command!r}")


def dump_fdb() -> Request:
    return RTM_GETNEIGH, NLM_F_REQUEST | NLM_F_DUMP, NDMSG.pack(AF_BRIDGE, 0, 0, 0, 0)


def brport_hairpin(index: int, on: bool) -> Request:
    """`bridge link set dev INDEX hairpin on|off` (IFLA_PROTINFO's IFLA_BRPORT_MODE)."""
    body = IFINFO.pack(AF_BRIDGE, 0, index, 0, 0) + nested(12, attr(4, U8.pack(1 if on else 0)))
    return RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK, body


def get_nsid(fd: int) -> Request:
    """The id this namespace gives the namespace open at `fd` (-1: none given yet)."""
    return RTM_GETNSID, NLM_F_REQUEST, RTGEN.pack(socket.AF_UNSPEC) + attr(3, U32.pack(fd))
