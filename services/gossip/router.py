"""The local mesh node (mesh:router.go + local_peer.go), sans-I/O.

Inputs: bytes from connections, dial outcomes, API calls (connect, forget) and `tick`,
always with `now`. Output: a list of actions for the shell (bytes to write, connections
to close, addresses to dial, topology changed) and `next_deadline()`.

Connection life (mesh:connection.go `run`):
1. open (either direction): write our header at once.
2. handshake done: reject connect-to-self and name collisions (never retried); for a
   discovered target the peer must already be known; then add it to our peer: a
   duplicate connection to the same peer is settled by `break_tie` on the shared
   connection UID, the connection limit is checked, our version is bumped, routes are
   recalculated, and a topology update for us and the peer is broadcast after
   `topology_defer` (coalesced). A new or restarted peer gets every channel's gossip.
3. the overlay confirms (a NullOverlay confirms at once): established, version bump,
   broadcast again.
4. any error or end: deleted from our peer, garbage collection, broadcast, and the
   connection maker decides when to retry.
Timers: route recalc 100 ms after a request, topology broadcast `topology_defer` after a
local change, periodic gossip of every channel every `gossip_interval`, heartbeats every
`heartbeat` and read timeouts per connection, and the connection maker's retry
deadline. The three periods are RouterConfig's, from GossipSettings.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import logging
import random
from dataclasses import dataclass, field

from services.gossip.bridged_gossiper import BridgedGossiper, Deliver
from services.gossip.connection import Connection, ConnState
from services.gossip.connection_maker import ConnectionMaker, Dial, EndReason
from services.gossip.gossip_channel import GOSSIP_INTERVAL, GossipChannels, Send
from services.gossip.peer import ConnectionSummary, LocalPeer, Peer, TieBreak, break_tie
from shared.weave.peer_name import PeerName, PeerUID
from services.gossip.peers import TOPOLOGY_CHANNEL, Peers, TopologyChange, TopologyGossiper
from services.gossip.protocol import TCP_HEARTBEAT, HandshakeComplete, MeshProtocol, ProtocolTag, make_features
from services.gossip.routes import RECALCULATE_DELAY, Routes
from services.gossip.surrogate_gossiper import SurrogateGossipData
from shared.config import GossipSettings
from shared.errors import LocalProtocolError, RemoteProtocolError

log = logging.getLogger(__name__)
TOPOLOGY_DEFER = GossipSettings().topology_defer_s
"""Seconds local topology changes are coalesced before broadcast (production's)."""
# Trace context across hosts, our extension: peers that advertise TRACE_FEATURE get, just
# before a gossip message, a TRACE_TAG message holding its W3C traceparent. mesh ignores
# unknown features, and Go peers never advertise this one, so they never see the tag.
TRACE_FEATURE = "TraceContext"
TRACE_TAG = 0xF0
MAX_TRACEPARENT = 128
GOSSIP_TAGS = (ProtocolTag.GOSSIP, ProtocolTag.GOSSIP_UNICAST, ProtocolTag.GOSSIP_BROADCAST)
OVERLAY_TAGS = (ProtocolTag.RESERVED1, ProtocolTag.RESERVED2, ProtocolTag.RESERVED3, ProtocolTag.OVERLAY_CONTROL)


@dataclass(frozen=True)
class RouterConfig:
    name: PeerName
    nickname: str
    uid: PeerUID
    port: int = 6783
    password: bytes | None = None
    conn_limit: int = 200
    discovery: bool = True
    trusted_subnets: tuple[str, ...] = ()
    overlays: tuple[str, ...] = ()
    """Overlay names to advertise; empty: a NullOverlay that establishes at once."""
    bus_channels: tuple[str, ...] = ()
    """Channels whose owner is another local service (see bridged_gossiper)."""
    gossip_interval: float = GOSSIP_INTERVAL
    """Seconds between periodic gossip rounds of every channel."""
    heartbeat: float = TCP_HEARTBEAT
    """Seconds between TCP heartbeats on each connection (read timeout: twice this)."""
    topology_defer: float = TOPOLOGY_DEFER
    """Seconds local topology changes are coalesced before they are broadcast."""
    trace_context: bool = True
    """Advertise TRACE_FEATURE (receive trace context from weave-py peers)."""


# -- actions ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Write:
    key: int
    data: bytes


@dataclass(frozen=True)
class Close:
    key: int
    reason: str


@dataclass(frozen=True)
class TopologyChanged:
    removed: tuple[PeerName, ...] = ()


@dataclass(frozen=True)
class OverlayConn:
    """A connection for the overlay (datapath) to run a forwarder on; see schemas.mesh."""

    peer: PeerName
    nickname: str
    conn_uid: int
    outbound: bool
    remote_addr: str
    local_addr: str
    session_key: bytes | None
    overlays: tuple[str, ...]
    compat: bool
    remote_short_id: int | None


@dataclass(frozen=True)
class OverlayUp:
    conn: OverlayConn


@dataclass(frozen=True)
class OverlayDown:
    conn: OverlayConn


@dataclass(frozen=True)
class OverlayMessage:
    """An overlay control message (tags 1-3, 7) from a peer, for the datapath."""

    peer: PeerName
    conn_uid: int
    """The connection it came on (the datapath's forwarder for it)."""
    tag: int
    payload: bytes


Action = Write | Close | Dial | TopologyChanged | OverlayMessage | Deliver | OverlayUp | OverlayDown


# -- queries -----------------------------------------------------------------------------
@dataclass(frozen=True)
class PeerView:
    """One peer as the router knows it now (what the rest of the host is told)."""

    name: PeerName
    nickname: str
    uid: PeerUID
    short_id: int
    reachable: bool
    """A route over established, symmetric connections exists (always, for ourselves)."""
    address: str
    """Underlay IP of our direct connection to it; "" without one."""


@dataclass(frozen=True)
class TopologyView:
    ourself: PeerName
    peers: tuple[PeerView, ...]
    """Every known peer, ourselves included, in name order."""
    unicast: dict[PeerName, PeerName]
    """Data-plane next hop per other peer (established, symmetric connections)."""
    broadcast: dict[PeerName, tuple[PeerName, ...]]
    """Data-plane broadcast next hops per source peer."""


@dataclass
class _Timers:
    recalc_at: float | None = None
    broadcast_at: float | None = None
    gossip_at: float | None = None
    broadcast_names: set[PeerName] = field(default_factory=set)


class Router:
    def __init__(self, config: RouterConfig, rng: random.Random, now: float) -> None:
        self.config = config
        self.rng = rng
        self._out: list[Action] = []
        self.ourself = LocalPeer(name=config.name, nickname=config.nickname, uid=config.uid,
                                 short_id=rng.randrange(1 << 12), has_short_id=True)
        self.peers = Peers(self.ourself, rng)
        self.routes = Routes(self.peers)
        self.routes.recalculate()
        self.channels = GossipChannels(self.peers, self.routes, rng, config.gossip_interval)
        self.topology = TopologyGossiper(self.peers, self.routes, self._on_topology_change)
        self.channels.register(TOPOLOGY_CHANNEL, self.topology)
        for channel in config.bus_channels:
            self.channels.register(channel, BridgedGossiper(channel, self._emit, config.gossip_interval))
        self.maker = ConnectionMaker(config.name, rng, config.port, config.discovery, config.conn_limit)
        self.conns: dict[int, Connection] = {}
        self.by_peer: dict[PeerName, int] = {}
        self._next_key = 1
        self._timers = _Timers(gossip_at=now + config.gossip_interval)
        self._maker_stale = False
        self._trace: str | None = None  # traceparent of what is being sent or relayed now
        self._trusted = [ipaddress.ip_network(s, strict=False) for s in config.trusted_subnets]

    # -- API -----------------------------------------------------------------------------
    def connect(self, peers: list[str], now: float, replace: bool = False) -> list[Action]:
        self.maker.add_direct(peers, now, replace=replace)
        self._refresh_maker(now)
        return self._drain(now)

    def forget(self, peers: list[str], now: float) -> list[Action]:
        self.maker.forget(peers)
        self._refresh_maker(now)
        return self._drain(now)

    def open_connection(self, outbound: bool, remote_addr: str, now: float, *, dial_address: str | None = None,
                        accept_new_peer: bool = True, local_addr: str = "") -> tuple[int, list[Action]]:
        """A TCP connection exists (we dialled, or accepted). Returns its key and what to write."""
        key, self._next_key = self._next_key, self._next_key + 1
        features = make_features(self.config.name, self.config.nickname, int(self.config.uid),
                                 self.rng.getrandbits(64), short_id=self.ourself.short_id,
                                 trusted=self._trusts(remote_addr),
                                 overlays=list(self.config.overlays) or None)
        if self.config.trace_context:
            features[TRACE_FEATURE] = "w3c"
        proto = MeshProtocol(outbound, self.config.password, features, heartbeat=self.config.heartbeat)
        conn = Connection(key, outbound, remote_addr, dial_address, accept_new_peer, proto, now,
                          read_deadline=now + proto.read_timeout, local_addr=local_addr)
        self.conns[key] = conn
        return key, [Write(key, proto.initiate())]

    def dial_failed(self, address: str, now: float, reason: str) -> list[Action]:
        self.maker.connection_failed(address, now, reason)
        self._refresh_maker(now)
        return self._drain(now)

    def receive(self, key: int, data: bytes, now: float) -> list[Action]:
        conn = self.conns.get(key)
        if conn is None or conn.state is ConnState.CLOSED:
            return []
        try:
            events = conn.receive(data, now)
            if features := conn.protocol.data_to_send():
                self._out.append(Write(key, features))
            for ev in events:
                if isinstance(ev, HandshakeComplete):
                    self._on_handshake(conn, ev, now)
                else:
                    self._on_message(conn, ev.tag, ev.payload, now)
                if conn.state is ConnState.CLOSED:
                    break
        except RemoteProtocolError as exc:
            self._close(conn, f"{exc.code}: {exc}", now)
        return self._drain(now)

    def connection_lost(self, key: int, now: float, reason: str) -> list[Action]:
        conn = self.conns.get(key)
        if conn is not None and conn.state is not ConnState.CLOSED:
            self._close(conn, reason, now, write_close=False)
        return self._drain(now)

    def send_gossip(self, channel: str, kind: str, payload: bytes, now: float,
                    dst: PeerName | None = None, trace: str | None = None) -> list[Action]:
        """Gossip from a local channel owner (MeshSend): `broadcast` to all, `unicast` to
        `dst`, `gossip` to random neighbours or down the connection to neighbour `dst`.
        `trace` (a traceparent) travels to weave-py peers, see TRACE_TAG."""
        self._trace = trace
        data = SurrogateGossipData((payload,))
        if kind == "unicast":
            if dst is None:
                raise LocalProtocolError("unicast gossip needs a destination")
            self._queue_sends(self.channels.gossip_unicast(channel, dst, payload))
        elif kind == "broadcast":
            self.channels.gossip_broadcast(channel, data)
        elif dst is not None:
            self.channels.gossip_down(dst, channel, data)
        else:
            self.channels.gossip_neighbour_subset(channel, data)
        return self._drain(now)

    # -- timers --------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        candidates = [c.next_deadline() for c in self.conns.values() if c.state is not ConnState.CLOSED]
        t = self._timers
        candidates += [x for x in (t.recalc_at, t.broadcast_at, t.gossip_at, self.maker.next_deadline())
                       if x is not None]
        return min(candidates, default=None)

    def tick(self, now: float) -> list[Action]:
        for conn in list(self.conns.values()):
            if conn.state is ConnState.CLOSED:
                continue
            if now >= conn.read_deadline:
                self._close(conn, "read timeout: no message from the peer in time", now)
            elif hb := conn.heartbeat_due(now):
                self._out.append(Write(conn.key, hb))
        t = self._timers
        if t.recalc_at is not None and now >= t.recalc_at:
            t.recalc_at = None
            self.routes.ensure_recalculated()
        if t.broadcast_at is not None and now >= t.broadcast_at:
            self._broadcast_topology()
        if t.gossip_at is not None and now >= t.gossip_at:
            t.gossip_at = now + self.config.gossip_interval
            self.channels.send_all_gossip(now)
        if (deadline := self.maker.next_deadline()) is not None and now >= deadline:
            self._refresh_maker(now)
        return self._drain(now)

    # -- handshake and connection table -------------------------------------------------
    def _on_handshake(self, conn: Connection, hello: HandshakeComplete, now: float) -> None:
        if hello.remote_name == self.config.name:
            kind = EndReason.CONNECT_TO_SELF if hello.remote_uid == self.config.uid else EndReason.NAME_COLLISION
            self._close(conn, "cannot connect to ourself" if kind is EndReason.CONNECT_TO_SELF
                        else f"peer name collision with {hello.remote_name}", now, kind=kind)
            return
        candidate = Peer(name=hello.remote_name, nickname=hello.remote_nickname, uid=hello.remote_uid,
                         short_id=int(hello.remote_short_id or 0), has_short_id=hello.remote_short_id is not None)
        if conn.accept_new_peer:
            peer, change = self.peers.fetch_with_default(candidate)
            if change.local_modified:
                self._schedule_broadcast(now, {self.config.name})
        else:
            peer = self.peers.fetch_and_add_ref(hello.remote_name)
            if peer is None:
                self._close(conn, f"found unknown remote name: {hello.remote_name} at {conn.remote_addr}", now)
                return
        conn.remote = peer
        restarted = peer.uid != hello.remote_uid  # our record is of an older incarnation
        self._add_connection(conn, now, restarted)

    def _add_connection(self, conn: Connection, now: float, restarted: bool) -> None:
        name = conn.remote.name
        existing_key = self.by_peer.get(name)
        if existing_key is not None:
            existing = self.conns[existing_key]
            verdict = break_tie(conn.conn_uid, existing.conn_uid)
            reason = f"multiple connections to {conn.remote} added to {self.ourself}"
            if verdict is not TieBreak.LOST:
                self._close(existing, reason, now)
            if verdict is not TieBreak.WON:
                self._close(conn, reason, now)
                return
        if self.ourself.connection_limit_reached(self.config.conn_limit):
            self._close(conn, f"connection limit reached ({self.config.conn_limit})", now)
            return
        connected = self.routes.unicast(name) is not None
        self.ourself.add_connection(ConnectionSummary(name, conn.remote_addr, conn.outbound, False))
        conn.added, conn.state = True, ConnState.PENDING
        self.by_peer[name] = conn.key
        if conn.dial_address:
            self.maker.connection_established(conn.dial_address, conn.outbound)
        label = " (restarted peer)" if restarted else "" if connected else " (new peer)"
        log.info("%s: connection added%s", conn, label)
        if restarted or not connected:
            self.channels.send_all_gossip_down(name, now)
        self.routes.recalculate()
        self._schedule_broadcast(now, {self.config.name, name})
        if not self.config.overlays:  # NullOverlay: established at once (mesh NullOverlay)
            self._mark_established(name, now, "none", {})
        else:
            self._prepare_overlay(conn, now)

    def _prepare_overlay(self, conn: Connection, now: float) -> None:
        """Announce the connection to the overlay (Weave's PrepareConnection + Confirm)."""
        theirs = conn.hello.features.get("Overlays")
        compat = theirs is None
        offered = ("sleeve",) if compat else tuple(theirs.split())
        common = tuple(o for o in self.config.overlays if o in offered)
        if not common:
            self._close(conn, f"no overlay in common (ours: {' '.join(self.config.overlays)}; "
                              f"theirs: {theirs})", now)
            return
        untrusted = not self._trusts(conn.remote_addr) or not conn.hello.trusted_by_remote
        key = conn.hello.session_key if untrusted else None
        conn.overlay_conn = OverlayConn(
            conn.remote.name, conn.remote.nickname, conn.conn_uid, conn.outbound, conn.remote_addr,
            conn.local_addr, key, common, compat,
            int(conn.hello.remote_short_id) if conn.hello.remote_short_id is not None else None)
        self._out.append(OverlayUp(conn.overlay_conn))

    def topology_view(self) -> TopologyView:
        """Peers, reachability and data-plane routes now (recalculated first if stale)."""
        self.routes.ensure_recalculated()
        addrs = {c.remote.name: c.remote_addr.rsplit(":", 1)[0] for c in self.conns.values() if c.remote}
        me = self.config.name
        peers = tuple(PeerView(p.name, p.nickname, p.uid, p.short_id,
                               p.name == me or self.routes.unicast(p.name) is not None, addrs.get(p.name, ""))
                      for p in sorted(self.peers, key=lambda p: p.name))
        unicast = {d: v for d, v in self.routes.unicast_table(symmetric=True).items() if d != me}
        broadcast = {p.name: tuple(self.routes.broadcast(p.name)) for p in self.peers}
        return TopologyView(me, peers, unicast, broadcast)

    def established_count(self) -> int:
        """Connections whose overlay confirmed them."""
        return sum(1 for c in self.conns.values() if c.state is ConnState.ESTABLISHED)

    def overlay_connections(self) -> list[OverlayConn]:
        return [c.overlay_conn for c in self.conns.values() if c.overlay_conn is not None]

    def send_overlay(self, peer: PeerName, conn_uid: int, tag: int, payload: bytes, now: float) -> list[Action]:
        """Write an overlay control message on the connection to `peer`, if it is still that one."""
        conn = self._conn_for(peer, conn_uid)
        if conn is not None:
            self._out.append(Write(conn.key, conn.protocol.send_message(tag, payload)))
        return self._drain(now)

    def overlay_failed(self, peer: PeerName, conn_uid: int, reason: str, now: float) -> list[Action]:
        conn = self._conn_for(peer, conn_uid)
        if conn is not None:
            self._close(conn, f"overlay failed: {reason}", now)
        return self._drain(now)

    def _conn_for(self, peer: PeerName, conn_uid: int | None) -> Connection | None:
        key = self.by_peer.get(peer)
        conn = self.conns.get(key) if key is not None else None
        if conn is None or (conn_uid is not None and conn.conn_uid != conn_uid):
            return None
        return conn

    def overlay_established(self, peer: PeerName, now: float, overlay: str = "none",
                            attrs: dict | None = None, conn_uid: int | None = None) -> list[Action]:
        """The overlay confirmed the connection to `peer`: mark it established. Later
        calls (e.g. a new MTU, or another overlay taking over) update what status shows."""
        conn = self._conn_for(peer, conn_uid)
        if conn is not None and conn.state is ConnState.ESTABLISHED:
            conn.overlay, conn.attrs = overlay, dict(attrs or {})
        self._mark_established(peer, now, overlay, attrs or {}, conn_uid)
        return self._drain(now)

    def _mark_established(self, peer: PeerName, now: float, overlay: str, attrs: dict,
                          conn_uid: int | None = None) -> None:
        conn = self._conn_for(peer, conn_uid)
        if conn is None or conn.state is not ConnState.PENDING:
            return
        conn.state, conn.overlay, conn.attrs = ConnState.ESTABLISHED, overlay, dict(attrs)
        self.ourself.connection_established(peer)
        self.routes.recalculate()
        self._schedule_broadcast(now, {self.config.name})
        log.info("%s: connection fully established", conn)

    def _close(self, conn: Connection, reason: str, now: float, kind: EndReason = EndReason.OTHER,
               write_close: bool = True) -> None:
        if conn.state is ConnState.CLOSED:
            return
        conn.state, conn.error = ConnState.CLOSED, reason
        log.info("%s: connection shutting down due to error: %s", conn, reason)
        if write_close:
            self._out.append(Close(conn.key, reason))
        del self.conns[conn.key]
        self.channels.connection_closed(conn.remote.name if conn.remote else PeerName(0))
        address = conn.dial_address or conn.remote_addr
        self.maker.connection_ended(address, conn.outbound, now, reason, kind)
        if conn.remote is not None:
            self.peers.dereference(conn.remote.name)
        if conn.overlay_conn is not None:
            self._out.append(OverlayDown(conn.overlay_conn))
        if conn.added and self.by_peer.get(conn.remote.name) == conn.key:
            del self.by_peer[conn.remote.name]
            self.ourself.delete_connection(conn.remote.name)
            # collect first, so no update names a peer we can no longer reach
            change = self.peers.garbage_collect()
            self.routes.recalculate()
            self._schedule_broadcast(now, {self.config.name})
            self._out.append(TopologyChanged(tuple(p.name for p in change.removed)))
        self._refresh_maker(now)

    # -- messages ------------------------------------------------------------------------
    def _on_message(self, conn: Connection, tag: int, payload: bytes, now: float) -> None:
        if tag == ProtocolTag.HEARTBEAT or not payload:
            return
        if tag == TRACE_TAG:
            conn.pending_trace = payload[:MAX_TRACEPARENT].decode("ascii", "replace")
            return
        if tag in GOSSIP_TAGS:
            self._trace, conn.pending_trace = conn.pending_trace, None
            self._queue_sends(self.channels.handle(tag, payload, now))
        elif tag in OVERLAY_TAGS and conn.remote is not None:
            self._out.append(OverlayMessage(conn.remote.name, conn.conn_uid, tag, payload))
        else:
            log.warning("%s: ignoring unknown message tag %d", conn, tag)

    def _on_topology_change(self, change: TopologyChange) -> None:
        self._maker_stale = True  # new peers may be new targets (discovery)
        if self._timers.recalc_at is None:
            self._timers.recalc_at = 0.0  # due at the next tick; coalesces further requests
        if change.local_modified:
            self._timers.broadcast_names.add(self.config.name)
            if self._timers.broadcast_at is None:
                self._timers.broadcast_at = 0.0
        self._out.append(TopologyChanged(tuple(p.name for p in change.removed)))

    def _schedule_broadcast(self, now: float, names: set[PeerName]) -> None:
        self._timers.broadcast_names |= names
        if self._timers.broadcast_at is None:
            self._timers.broadcast_at = now + self.config.topology_defer
        self._out.append(TopologyChanged())

    def _broadcast_topology(self) -> None:
        names = self._timers.broadcast_names & self.peers.names()
        self._timers.broadcast_at, self._timers.broadcast_names = None, set()
        if names:
            self.channels.gossip_neighbour_subset(TOPOLOGY_CHANNEL, self.topology.data(names))

    def _refresh_maker(self, now: float) -> None:
        summaries = [ConnectionSummary(c.remote.name if c.remote else PeerName(0), c.remote_addr, c.outbound,
                                       c.state is ConnState.ESTABLISHED)
                     for c in self.conns.values()]
        self._out.extend(self.maker.refresh(now, self.peers, summaries))

    # -- output --------------------------------------------------------------------------
    def _emit(self, action: Action) -> None:
        if isinstance(action, Deliver) and self._trace:
            action = dataclasses.replace(action, trace=self._trace)
        self._out.append(action)

    def _queue_sends(self, sends: list[Send]) -> None:
        for send in sends:
            key = self.by_peer.get(send.to)
            if key is not None:
                conn = self.conns[key]
                if self._trace and conn.hello and conn.hello.features.get(TRACE_FEATURE):
                    self._out.append(Write(key, conn.protocol.send_message(TRACE_TAG, self._trace.encode())))
                self._out.append(Write(key, conn.protocol.send_message(send.tag, send.body)))

    def _drain(self, now: float) -> list[Action]:
        if self._timers.recalc_at == 0.0:
            self._timers.recalc_at = now + RECALCULATE_DELAY
        if self._timers.broadcast_at == 0.0:
            self._timers.broadcast_at = now + self.config.topology_defer
        if self._maker_stale:
            self._maker_stale = False
            self._refresh_maker(now)
        self._queue_sends(self.channels.flush())
        self._trace = None
        out, self._out = self._out, []
        return out

    def _trusts(self, remote_addr: str) -> bool:
        host = remote_addr.rsplit(":", 1)[0].strip("[]")
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(ip in net for net in self._trusted)
