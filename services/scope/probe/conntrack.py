"""Short-lived TCP flows from conntrack over netlink (ctnetlink), as Scope's flow walker.

Three parts:
- the codec (sans-I/O): the dump request, and netlink messages -> `Flow`s (an
  IPCTNL_MSG_CT_NEW answer to a dump or an update event, IPCTNL_MSG_CT_DELETE a
  destroy event). Attributes are nlattr TLVs (host order, 4-aligned) with nested
  tuples (CTA_TUPLE_ORIG/REPLY -> CTA_TUPLE_IP, CTA_TUPLE_PROTO) whose values are in
  network order;
- `FlowTracker` (sans-I/O): Scope's conntrackWalker. A dump seeds the active flows
  (TCP, not CLOSE or TIME_WAIT); an update event makes a flow active, or, when it
  reaches TIME_WAIT, moves it to the buffer; a destroy moves an active flow to the
  buffer (flows never seen updated are ignored: Scope #1462). `walk()` returns active
  and buffered flows and empties the buffer, so a connection that came and went
  between two spies is still reported once;
- `ConntrackSocket`: the thin shell, one NETLINK_NETFILTER socket of the namespace it
  is opened in (conntrack tables are per network namespace).
"""
from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
import struct
from collections import OrderedDict
from dataclasses import dataclass

from shared.netlink_wire import (NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, attrs, error_code, message,
                                 messages)

log = logging.getLogger(__name__)

NETLINK_NETFILTER = 12
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_NEW, IPCTNL_MSG_CT_GET, IPCTNL_MSG_CT_DELETE = 0, 1, 2
NF_NETLINK_CONNTRACK_UPDATE, NF_NETLINK_CONNTRACK_DESTROY = 0x2, 0x4

CTA_TUPLE_ORIG, CTA_TUPLE_REPLY, CTA_STATUS, CTA_PROTOINFO, CTA_ID = 1, 2, 3, 4, 12
CTA_TUPLE_IP, CTA_TUPLE_PROTO = 1, 2
CTA_IP_V4_SRC, CTA_IP_V4_DST, CTA_IP_V6_SRC, CTA_IP_V6_DST = 1, 2, 3, 4
CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT = 1, 2, 3
CTA_PROTOINFO_TCP, CTA_PROTOINFO_TCP_STATE = 1, 1
IPS_NAT_MASK = 0x30  # IPS_SRC_NAT | IPS_DST_NAT
TCP_CT_CLOSE, TCP_CT_TIME_WAIT = 8, 7
IPPROTO_TCP = 6

_NFGEN = struct.Struct("!BBH")


@dataclass(frozen=True)
class Tuple:
    src: str
    dst: str
    sport: int
    dport: int


@dataclass(frozen=True)
class Flow:
    """One conntrack entry, or one event about it."""

    id: int
    proto: int
    orig: Tuple
    reply: Tuple
    tcp_state: int
    """TCP_CONNTRACK_* (3 ESTABLISHED, 7 TIME_WAIT, 8 CLOSE); -1 when not given."""
    status: int
    event: str = "dump"
    """dump | update | destroy."""

    def four_tuple(self) -> Tuple:
        """The connection as its client opened it; for a DNAT-ed flow, the reply
        direction names the real server (Scope's flowToTuple)."""
        if self.orig.dst != self.reply.src:
            return Tuple(self.reply.dst, self.reply.src, self.reply.dport, self.reply.sport)
        return self.orig


class ConntrackFormatError(ValueError):
    """A netlink message from the kernel that is not a conntrack entry."""


# -- codec -------------------------------------------------------------------------------

def dump_request(seq: int = 1, family: int = socket.AF_UNSPEC) -> bytes:
    """IPCTNL_MSG_CT_GET with NLM_F_DUMP: every entry of the namespace's table
    (AF_UNSPEC: IPv4 and IPv6)."""
    return message((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP, seq,
                   _NFGEN.pack(family, 0, 0))


def _tuple(data: bytes) -> tuple[Tuple, int]:
    src = dst = ""
    sport = dport = proto = 0
    for kind, value in attrs(data):
        if kind == CTA_TUPLE_IP:
            for k, v in attrs(value):
                if k in (CTA_IP_V4_SRC, CTA_IP_V6_SRC):
                    src = str(ipaddress.ip_address(bytes(v)))
                elif k in (CTA_IP_V4_DST, CTA_IP_V6_DST):
                    dst = str(ipaddress.ip_address(bytes(v)))
        elif kind == CTA_TUPLE_PROTO:
            for k, v in attrs(value):
                if k == CTA_PROTO_NUM:
                    proto = v[0]
                elif k == CTA_PROTO_SRC_PORT:
                    (sport,) = struct.unpack("!H", v[:2])
                elif k == CTA_PROTO_DST_PORT:
                    (dport,) = struct.unpack("!H", v[:2])
    return Tuple(src, dst, sport, dport), proto


def _tcp_state(protoinfo: bytes) -> int:
    for kind, value in attrs(protoinfo):
        if kind == CTA_PROTOINFO_TCP:
            for k, v in attrs(value):
                if k == CTA_PROTOINFO_TCP_STATE:
                    return v[0]
    return -1


def parse_flow(body: bytes, event: str) -> Flow:
    """One ctnetlink message body (after nlmsghdr: nfgenmsg, then attributes)."""
    orig = reply = None
    proto = status = ct_id = 0
    state = -1
    for kind, value in attrs(body[_NFGEN.size:]):
        if kind == CTA_TUPLE_ORIG:
            orig, proto = _tuple(value)
        elif kind == CTA_TUPLE_REPLY:
            reply, _ = _tuple(value)
        elif kind == CTA_STATUS:
            (status,) = struct.unpack("!I", value[:4])
        elif kind == CTA_ID:
            (ct_id,) = struct.unpack("!I", value[:4])
        elif kind == CTA_PROTOINFO:
            state = _tcp_state(value)
    if orig is None or reply is None:
        raise ConntrackFormatError("entry without both tuples")
    return Flow(ct_id, proto, orig, reply, state, status, event)


def parse_messages(data: bytes, *, dump: bool) -> tuple[list[Flow], bool, int]:
    """Flows in one netlink read; (flows, done, error): `done` once NLMSG_DONE ends a
    dump; `error` a negative errno from an NLMSG_ERROR (0 when none). In a dump every
    entry is a `dump` flow; outside one, CT_NEW is an `update` and CT_DELETE a `destroy`."""
    flows: list[Flow] = []
    done, error = False, 0
    for kind, _flags, _seq, body in messages(data, strict=False):
        if kind == NLMSG_DONE:
            done = True
        elif kind == NLMSG_ERROR and len(body) >= 4:
            error = -error_code(body)
        elif kind >> 8 == NFNL_SUBSYS_CTNETLINK and kind & 0xFF in (IPCTNL_MSG_CT_NEW, IPCTNL_MSG_CT_DELETE):
            event = "dump" if dump else ("destroy" if kind & 0xFF == IPCTNL_MSG_CT_DELETE else "update")
            try:
                flows.append(parse_flow(body, event))
            except (ConntrackFormatError, ValueError, struct.error, IndexError) as exc:
                log.debug("skipping a conntrack message: %s", exc)
    return flows, done, error


# -- the flow walker ---------------------------------------------------------------------

class FlowTracker:
    """Scope's conntrackWalker: active TCP flows, and those that ended since the last walk."""

    def __init__(self, max_flows: int = 50_000) -> None:
        self.max_flows = max_flows
        self.active: OrderedDict[int, Flow] = OrderedDict()
        self.buffered: list[Flow] = []
        self.dropped = 0
        """Flows forgotten because the bounds were reached."""

    def seed(self, flows: list[Flow]) -> None:
        """A dump of the table: every live TCP flow becomes active (the buffer keeps
        what ended before it, as Scope's clearFlows does across a restart)."""
        self.buffered.extend(self.active.values())
        self.active.clear()
        for f in flows:
            if f.proto == IPPROTO_TCP and f.tcp_state not in (TCP_CT_CLOSE, TCP_CT_TIME_WAIT):
                self._activate(f)
        self._bound_buffer()

    def on_event(self, f: Flow) -> None:
        if f.proto != IPPROTO_TCP:
            return
        if f.event == "update":
            if f.tcp_state != TCP_CT_TIME_WAIT:
                self._activate(f)
            elif f.id in self.active:
                del self.active[f.id]
                self.buffered.append(f)
        elif f.event == "destroy" and f.id in self.active:
            self.buffered.append(self.active.pop(f.id))
        self._bound_buffer()

    def walk(self) -> list[Flow]:
        out = list(self.active.values()) + self.buffered
        self.buffered = []
        return out

    def _activate(self, f: Flow) -> None:
        self.active[f.id] = f
        self.active.move_to_end(f.id)
        while len(self.active) > self.max_flows:
            self.active.popitem(last=False)
            self.dropped += 1

    def _bound_buffer(self) -> None:
        extra = len(self.buffered) - self.max_flows
        if extra > 0:
            del self.buffered[:extra]
            self.dropped += extra


# -- the shell ---------------------------------------------------------------------------

def events_supported(proc_root: str = "/proc") -> bool:
    """Conntrack events are on in this namespace (Scope's IsConntrackSupported)."""
    try:
        with open(f"{proc_root}/sys/net/netfilter/nf_conntrack_events") as f:
            return f.read().strip() != "0"
    except OSError:
        return False


class ConntrackSocket:
    """Dumps and follows the conntrack table of the current network namespace."""

    RCVBUF = 4 << 20

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, NETLINK_NETFILTER)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.RCVBUF)

    def close(self) -> None:
        self.sock.close()

    @staticmethod
    def dump() -> list[Flow]:
        """The whole table now (blocking; its own socket, so events never mix in)."""
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as s:
            s.settimeout(5.0)
            s.bind((0, 0))
            s.send(dump_request())
            flows: list[Flow] = []
            while True:
                got, done, error = parse_messages(s.recv(1 << 20), dump=True)
                flows += got
                if error:
                    raise OSError(-error, f"conntrack dump: {errno.errorcode.get(-error, error)}")
                if done:
                    return flows

    async def follow(self, tracker: FlowTracker) -> None:
        """Feed update/destroy events to `tracker` until cancelled. On ENOBUFS (events
        lost under a burst) the table is dumped again, as Scope restarts its walker."""
        self.sock.bind((0, NF_NETLINK_CONNTRACK_UPDATE | NF_NETLINK_CONNTRACK_DESTROY))
        loop = asyncio.get_running_loop()
        tracker.seed(await asyncio.to_thread(self.dump))
        while True:
            try:
                data = await loop.sock_recv(self.sock, 1 << 20)
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                log.info("conntrack events overran the socket buffer: re-reading the table")
                tracker.seed(await asyncio.to_thread(self.dump))
                continue
            for flow in parse_messages(data, dump=False)[0]:
                tracker.on_event(flow)
