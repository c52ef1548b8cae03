"""The sleeve's asyncio shell: the SleeveOverlay core (sleeve/overlay.py) wired to the
bridge (capture.PacketPort) and the UDP sockets (udp.UdpTransport).

Inputs, each handled to completion on the event loop thread (no locks):
- frames from the bridge and datagrams from UDP, read in batches of up to BATCH per
  wake-up (loop.add_reader), then one flush of the batched datagrams;
- from the overlay shell: connections to add (a forwarder each, confirmed at once: the
  gossip service announces a connection once mesh has added it) and remove, the
  peers' control messages, topology, and `tick` at `next_deadline()`.
Outputs: datagrams and injected frames; the forwarders' control messages for the
gossip service (`post`, as OverlaySend: sleeve_mesh.control_to_mesh); and what their
verdicts say of the sleeve (`on_word`, sleeve_mesh.sleeve_word), which the overlay
shell hands to the OverlaySwitch to decide what gossip hears.

State: the connections the gossip service announced (by UID) and the UDP/capture
counters; forwarders, routes, MACs and their counters live in the cores.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable

from services.datapath import sleeve_mesh
from services.datapath.capture import FRAME_BUFFER, PacketPort
from services.datapath.overlay_switch import SleeveStatus
from services.datapath.sleeve.forwarder import ForwarderState, Heartbeats, SendControl, SendPacket
from services.datapath.sleeve.mac_cache import MacCache
from services.datapath.sleeve.offload import VNET_LEN
from services.datapath.sleeve.overlay import Inject, SleeveOverlay
from services.datapath.sleeve.train import Reassembler, TrainSender
from services.datapath.topology import TopologyRoutes
from services.datapath.udp import MAX_DATAGRAM, UdpTransport
from shared import subjects
from shared.config import DatapathSettings
from shared.schemas.base import Message
from shared.schemas.mesh import OverlayConnection, OverlayMessageEvent, TopologyEvent
from shared.weave.peer_name import PeerName

log = logging.getLogger("weave.datapath.sleeve")

BATCH = 64
"""Frames or datagrams handled per wake-up before flushing (baseline.md: drain up to 64)."""


class SleeveShell:
    def __init__(self, ourself: PeerName, host: str, port: int, pcap_ifname: str,
                 fast_peers: Callable[[], frozenset[PeerName]], post: Callable[[str, Message], None],
                 on_word: Callable[[OverlayConnection, SleeveStatus], None], wake: Callable[[], None],
                 settings: DatapathSettings = DatapathSettings()) -> None:
        """`fast_peers`: the peers the fastpath carries now (left out of our broadcasts);
        `post`: a request for the gossip service; `on_word`: what a forwarder said of
        the sleeve of a connection; `wake`: deadlines may have moved; `settings`: the
        heartbeat periods and the MAC expiry."""
        self.host, self.port_no, self.pcap_ifname = host, port, pcap_ifname
        self.post, self.on_word, self.wake = post, on_word, wake
        self.routes = TopologyRoutes()
        self.overlay = SleeveOverlay(ourself, self.routes.peers, sleeve_mesh.SleeveNextHops(self.routes, fast_peers),
                                     MacCache(settings.mac_expiry_s),
                                     Heartbeats(settings.fast_heartbeat_s, settings.slow_heartbeat_s))
        self.connections: dict[int, OverlayConnection] = {}
        """By connection UID: what the gossip service announced (the forwarder of each is
        `overlay.connections[uid]`)."""
        self.inject_drops = 0
        self._cbuf = bytearray(FRAME_BUFFER)
        self._cview = memoryview(self._cbuf)
        self._ubuf = bytearray(MAX_DATAGRAM)
        self._uview = memoryview(self._ubuf)
        self.port: PacketPort | None = None
        self.udp: UdpTransport | None = None
        self.trains_out = TrainSender()
        self.trains_in = Reassembler()
        self._mac_expiry_at = 0.0

    # -- life cycle ----------------------------------------------------------------------
    def start(self, loop) -> None:
        self.loop = loop
        self.port = PacketPort(self.pcap_ifname)
        self.udp = UdpTransport(self.host, self.port_no)
        loop.add_reader(self.port.fileno(), self._on_capture)
        loop.add_reader(self.udp.fileno(), self._on_udp)
        self._mac_expiry_at = loop.time() + self.overlay.mac_expiry_interval
        log.info("sleeve listening on %s:%d (udp), capturing on %s", self.host, self.port_no, self.pcap_ifname)

    def stop(self) -> None:
        for obj in (self.port, self.udp):
            if obj is not None:
                self.loop.remove_reader(obj.fileno())
                obj.close()

    # -- data path -----------------------------------------------------------------------
    def _on_capture(self) -> None:
        now = self.loop.time()
        recv, view, capture, run = self.port.recv_into, self._cview, self.overlay.capture, self._run
        for _ in range(BATCH):
            try:
                n = recv(self._cbuf)
            except BlockingIOError:
                break
            except OSError as exc:
                log.warning("capture read failed: %s", exc)
                break
            if n > VNET_LEN:
                out = capture(view[VNET_LEN:n], now, view[:VNET_LEN])
                if out:
                    run(out, now)
        self._flush(now)

    def _on_udp(self) -> None:
        now = self.loop.time()
        recv, view, receive, run = self.udp.recv_into, self._uview, self.overlay.receive, self._run
        feed = self.trains_in.feed
        for _ in range(BATCH):
            try:
                n, addr, seg = recv(self._ubuf)
            except BlockingIOError:
                break
            except OSError as exc:  # e.g. an ICMP error reported on the socket
                log.debug("udp read: %s", exc)
                continue
            if not n:
                continue
            for datagram in feed(view, n, seg, addr):  # sleeve datagrams, whole trains
                out = receive(datagram, addr, now)
                if out:
                    run(out, now)
        self._flush(now)

    def _flush(self, now: float) -> None:
        for packet in self.overlay.flush():
            self._send(packet, now)

    def _run(self, actions: list, now: float) -> None:
        for a in actions:
            kind = type(a)
            if kind is SendPacket:
                self._send(a, now)
            elif kind is Inject:
                try:
                    self.port.send(a.vnet, a.frame)
                except OSError:
                    self.inject_drops += 1
            else:
                self._verdict(a)

    def _send(self, packet: SendPacket, now: float) -> None:
        if packet.train and len(packet.payload) > packet.train:
            sends = self.trains_out.sends(packet.payload, packet.train)
            if sends is not None and self.udp.send_train(sends, packet.addr, packet.train):
                return
        pmtu = self.udp.send(packet.payload, packet.addr, packet.df)
        if pmtu is None:
            return
        self._run(self.overlay.msg_too_big(packet.addr, pmtu, now), now)
        self.wake()

    def _verdict(self, a) -> None:
        """A forwarder's control message or verdict (not a packet)."""
        fwd = self.overlay.forwarders.get(a.peer)
        conn = self.connections.get(fwd.conn_uid) if fwd is not None else None
        if conn is None:
            return
        if isinstance(a, SendControl):
            self.post(subjects.request("gossip", "overlay_send"), sleeve_mesh.control_to_mesh(conn, a))
            return
        word = sleeve_mesh.sleeve_word(fwd, a)
        if word is not None:
            self.on_word(conn, word)

    # -- connections, control messages, topology -------------------------------------------
    def has(self, conn_uid: int) -> bool:
        return conn_uid in self.connections

    def add(self, conn: OverlayConnection, resumed: bool) -> None:
        """A forwarder for the connection (the caller checked it offers sleeve and is new)."""
        remote_addr = None
        if conn.outbound:  # the peer's UDP port is its TCP port; inbound: learnt from heartbeats
            ip, _, port = conn.remote_addr.rpartition(":")
            remote_addr = (ip, int(port))
        # A resumed connection keeps its session key, so our sequence numbers must continue
        # above the previous process's: microseconds since the epoch exceed any count of
        # packets it sealed since the connection began (it seals far fewer than one per µs).
        first_seq = time.time_ns() // 1000 if resumed else 0
        fwd = self.overlay.make_forwarder(conn.peer, conn.conn_uid, conn.outbound, remote_addr,
                                          conn.session_key, offload=not conn.compat, resumed=resumed,
                                          first_seq=first_seq, trains=self.udp is not None and self.udp.gro)
        self.connections[conn.conn_uid] = conn
        log.info("sleeve to %s(%s): %s connection %s, %s", conn.peer, conn.nickname,
                 "outbound" if conn.outbound else "inbound", conn.remote_addr,
                 "encrypted" if conn.session_key else "plaintext")
        now = self.loop.time()
        self._run(self.overlay.confirm(fwd, now), now)
        self._flush(now)

    def remove(self, conn_uid: int) -> None:
        if self.connections.pop(conn_uid, None) is None:
            return
        fwd = self.overlay.connections.get(conn_uid)
        if fwd is None:
            return
        self.overlay.stop(fwd)
        ip = fwd.remote_addr[0] if fwd.remote_addr else None
        if ip and not self.overlay.uses_host(ip):
            self.udp.forget(ip)

    def control(self, ev: OverlayMessageEvent) -> None:
        """A control message from the peer, on the connection it names (or, if that one
        is gone, to the peer's current forwarder)."""
        fwd = self.overlay.connections.get(ev.conn_uid) or self.overlay.forwarders.get(ev.peer)
        conn = self.connections.get(fwd.conn_uid) if fwd is not None else None
        if conn is None:
            return
        sub = sleeve_mesh.control_from_mesh(conn, ev.tag, ev.payload)
        if sub is None:
            return
        now = self.loop.time()
        before = sleeve_mesh.sleeve_name(fwd)
        self._run(fwd.control_message(sub[0], sub[1], now), now)
        word = sleeve_mesh.renamed(fwd, before)
        if word is not None:
            self.on_word(conn, word)
        self._flush(now)
        self.wake()

    def learn(self, peer: PeerName, macs: list[str]) -> None:
        """MACs the fastpath carried behind `peer` (aa:bb:cc:dd:ee:ff text), now the sleeve's."""
        self.overlay.learn_macs(peer, [bytes.fromhex(m.replace(":", "")) for m in macs], self.loop.time())

    def topology(self, event: TopologyEvent) -> None:
        removed = self.routes.update(event)
        self.overlay.topology_changed(self.routes.peers, removed)

    # -- timers --------------------------------------------------------------------------
    def next_deadline(self) -> float:
        return min(self.overlay.next_deadline() or float("inf"), self._mac_expiry_at)

    def tick(self, now: float, early: float = 0.0) -> None:
        """Fire the sleeve's due timers; a forwarder's heartbeat due within `early` goes now
        too (Forwarder.tick)."""
        self._run(self.overlay.tick(now, early), now)
        self._flush(now)
        if now >= self._mac_expiry_at:
            self.overlay.expire_macs(now)
            self._mac_expiry_at = now + self.overlay.mac_expiry_interval

    # -- status ----------------------------------------------------------------------------
    def forwarder_states(self) -> dict[str, int]:
        """How many forwarders are in each state (every state listed)."""
        states = {st.value: 0 for st in ForwarderState}
        for fwd in self.overlay.connections.values():
            states[fwd.state.value] += 1
        return states

    def established(self) -> int:
        return sum(1 for fwd in self.overlay.connections.values() if fwd.state is ForwarderState.ESTABLISHED)

    def capture_stats(self) -> tuple[int, int]:
        """(frames received, dropped) by the capture socket."""
        return self.port.stats() if self.port is not None else (0, 0)

    def drop_counts(self) -> dict[str, int]:
        counts = dict(self.overlay.drop_counts())
        for reason, n in [*(self.udp.drops.items() if self.udp else ()), *self.trains_in.drops.items()]:
            counts[reason] = counts.get(reason, 0) + n
        if self.inject_drops:
            counts["inject_failed"] = self.inject_drops
        return counts
