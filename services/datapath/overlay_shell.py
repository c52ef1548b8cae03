"""The sleeve overlay's asyncio shell: the SleeveOverlay core wired to the bridge
(capture.PacketPort), the UDP sockets (udp.UdpTransport) and the bus.

Inputs, each handled to completion on the event loop thread (no locks):
- frames from the bridge and datagrams from UDP, read in batches of up to BATCH per
  wake-up (loop.add_reader), then one flush of the batched datagrams;
- weave.events.overlay_connection: a forwarder per mesh connection that offers
  sleeve (confirmed at once: the gossip service announces a connection once mesh has
  added it); weave.events.overlay_message: the peer's control messages;
  weave.events.topology: the data-plane routes;
- at start and every RESYNC_S, snapshots (weave.gossip.connections, .peers): a
  restarted datapath catches up, and a lost event is repaired;
- one timer task for the forwarders' deadlines and the MAC cache expiry.
Its periods are the service's DatapathSettings (heartbeats, MAC expiry).
Outputs: datagrams, injected frames, and for the gossip service (through one bounded
outbox, in order): control messages (OverlaySend), OverlayEstablished (with the MTU
once verified), OverlayFailed.

The fastpath (fastpath.py, kernel VXLAN on UDP 6784, between weave-py peers) runs beside
sleeve unless the mode is "sleeve": the OverlaySwitch (overlay_switch.py) picks, per
connection, the overlay that works now; this shell applies its choice (the peer's
all-zeros FDB entry while on the fastpath; sleeve leaves fastpath peers out of its
own broadcasts) and reports the overlay in use to gossip with OverlayEstablished. Its
netlink work runs in order on a worker (asyncio.to_thread), off the event loop.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone

from services.datapath import fastpath as fp
from services.datapath.capture import FRAME_BUFFER, PacketPort
from services.datapath.host_iptables import HostIptables
from services.datapath.sleeve import frame as fr
from services.datapath.sleeve.forwarder import (Established, Failed, Forwarder, Heartbeats, MTUVerified, SendControl,
                                                SendPacket, ForwarderState)
from services.datapath.sleeve.mac_cache import MacCache
from services.datapath.sleeve.offload import VNET_LEN
from services.datapath.sleeve.overlay import Inject, SleeveOverlay
from services.datapath.sleeve.train import Reassembler, TrainSender
from services.datapath.topology import TopologyRoutes
from services.datapath.overlay_switch import FASTPATH, OverlaySwitch, SendHeartbeat, Switched
from services.datapath.udp import MAX_DATAGRAM, UdpTransport
from shared.weave.protocol_tags import ProtocolTag
from shared import subjects
from shared.bus import Bus, BusError, BusMsg
from shared.config import DatapathSettings
from shared.schemas.base import Message, Ok
from shared.weave.peer_name import PeerName
from shared.schemas.mesh import (OverlayConnection, OverlayConnectionEvent, OverlayConnectionsReply,
                                 OverlayConnectionsRequest, OverlayEstablished, OverlayFailed, OverlayMessageEvent,
                                 OverlaySend, PeersRequest, TopologyEvent)

log = logging.getLogger("weave.datapath.sleeve")

OVERLAY = "sleeve"
FAST_SLEEVE = "fast-sleeve"
"""How gossip's status names the sleeve to a peer that takes our offloaded superframes
(a weave-py peer whose kernel reassembles our fragments): negotiated inside the sleeve
(control sub-tag 0x80), so the overlay both ends agreed on stays `sleeve`."""
BATCH = 64
"""Frames or datagrams handled per wake-up before flushing (baseline.md: drain up to 64)."""
OUTBOX_LIMIT = 10_000
RESYNC_S = 30.0
SNAPSHOT_RETRY_S = 1.0
BUS_TIMEOUT_S = 5.0
_COMPAT_TAGS = (ProtocolTag.RESERVED1, ProtocolTag.RESERVED2, ProtocolTag.RESERVED3)


class _SleeveNextHops:
    """The topology's routes, minus the peers on the fastpath for broadcasts we start
    (the VXLAN device floods those to them)."""

    def __init__(self, routes: TopologyRoutes, fast: set[PeerName]) -> None:
        self.routes, self.fast = routes, fast

    def unicast(self, name: int) -> int | None:
        return self.routes.unicast(name)

    def broadcast(self, source: int) -> list[int]:
        hops = self.routes.broadcast(source)
        if self.fast and source == self.routes.ourself:
            return [h for h in hops if h not in self.fast]
        return hops


class OverlayShell:
    def __init__(self, bus: Bus, ourself: PeerName, host: str, port: int, pcap_ifname: str, mode: str = "sleeve",
                 bridge: str = "weave", bridge_port: str = "vethwe-bridge",
                 settings: DatapathSettings = DatapathSettings()) -> None:
        self.bus, self.ourself, self.host, self.port_no, self.pcap_ifname = bus, ourself, host, port, pcap_ifname
        self.mode, self.bridge, self.bridge_port = mode, bridge, bridge_port
        self.switch = OverlaySwitch(mode)
        self.fast: set[PeerName] = set()
        """Peers whose traffic the fastpath carries now (sleeve leaves them out of broadcasts)."""
        self.fast_index: int | None = None
        self.fast_mtu = 0
        self.netfilter: HostIptables | None = None
        """The fastpath's source filter (host_iptables.py), once the device is up."""
        self.hb: fp.HeartbeatSocket | None = None
        self._netlink: asyncio.Queue[Callable[[], None]] = asyncio.Queue()
        self.routes = TopologyRoutes()
        self.overlay = SleeveOverlay(ourself, self.routes.peers, _SleeveNextHops(self.routes, self.fast),
                                     MacCache(settings.mac_expiry_s),
                                     Heartbeats(settings.fast_heartbeat_s, settings.slow_heartbeat_s))
        self.conns: dict[int, tuple[Forwarder, OverlayConnection]] = {}
        """By connection UID: every forwarder we made, and the connection it runs on."""
        self.inject_drops = 0
        self._wake = asyncio.Event()
        self._outbox: asyncio.Queue[tuple[str, Message]] = asyncio.Queue(maxsize=OUTBOX_LIMIT)
        self._tasks: set[asyncio.Task] = set()
        self._cbuf = bytearray(FRAME_BUFFER)
        self._cview = memoryview(self._cbuf)
        self._ubuf = bytearray(MAX_DATAGRAM)
        self._uview = memoryview(self._ubuf)
        self.port: PacketPort | None = None
        self.udp: UdpTransport | None = None
        self.trains_out = TrainSender()
        self.trains_in = Reassembler()

    # -- life cycle ----------------------------------------------------------------------
    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.port = PacketPort(self.pcap_ifname)
        self.udp = UdpTransport(self.host, self.port_no)
        self.loop.add_reader(self.port.fileno(), self._on_capture)
        self.loop.add_reader(self.udp.fileno(), self._on_udp)
        await self._start_fastpath()
        await self.bus.subscribe(subjects.event("topology"), self._on_topology)
        await self.bus.subscribe(subjects.event("overlay_connection"), self._on_connection)
        await self.bus.subscribe(subjects.event("overlay_message"), self._on_message)
        self._mac_expiry_at = self.loop.time() + self.overlay.frame_router.macs.expiry_interval
        for coro in (self._timer_loop(), self._outbox_loop(), self._resync_loop(), self._netlink_loop()):
            task = self.loop.create_task(coro)
            self._tasks.add(task)
        log.info("sleeve listening on %s:%d (udp), capturing on %s", self.host, self.port_no, self.pcap_ifname)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for obj in (self.port, self.udp, self.hb):
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
        for fwd in list(self.overlay.forwarders.values()):
            if fwd.remote_addr is not None and fwd.remote_addr[0] == packet.addr[0]:
                self._run(fwd.msg_too_big(pmtu, now), now)
        self._wake.set()

    # -- forwarder verdicts and control messages ---------------------------------------
    def _verdict(self, a) -> None:
        fwd = self.overlay.forwarders.get(a.peer)
        if fwd is None:
            return
        conn = self.conns[fwd.conn_uid][1]
        if isinstance(a, SendControl):
            index = None if conn.compat else conn.overlays.index(OVERLAY)
            body = a.mesh_message(index)
            self._post(subjects.request("gossip", "overlay_send"),
                       OverlaySend(peer=conn.peer, conn_uid=conn.conn_uid, tag=body[0], payload=body[1:]))
        elif isinstance(a, Established) or (isinstance(a, MTUVerified) and
                                              (fwd.state is ForwarderState.ESTABLISHED or fwd.resumed)):
            if self.switch.using(conn.conn_uid) == FASTPATH:
                return  # the fastpath carries this peer; gossip shows it
            log.info("%s to %s(%s): established, mtu=%s encrypted=%s", self._sleeve_name(fwd), conn.peer,
                     conn.nickname, fwd.mtu if fwd.mtu != fr.DEFAULT_MTU else "?", fwd.encrypted)
            self._report_sleeve(fwd, conn)
        elif isinstance(a, Failed):
            if self.switch.using(conn.conn_uid) == FASTPATH:
                log.warning("sleeve to %s(%s) failed (%s); the fastpath carries it", conn.peer, conn.nickname,
                            a.reason)
                return
            log.warning("sleeve to %s(%s) failed: %s", conn.peer, conn.nickname, a.reason)
            self._post(subjects.request("gossip", "overlay_failed"),
                       OverlayFailed(peer=conn.peer, conn_uid=conn.conn_uid, reason=a.reason))

    def _post(self, subject: str, msg: Message) -> None:
        try:
            self._outbox.put_nowait((subject, msg))
        except asyncio.QueueFull:
            log.warning("dropping %s for the gossip service: outbox full", type(msg).__name__)

    async def _outbox_loop(self) -> None:
        while True:
            subject, msg = await self._outbox.get()
            try:
                await self.bus.request(subject, msg, Ok, timeout=BUS_TIMEOUT_S)
            except BusError as exc:
                log.warning("%s not delivered to the gossip service: %s", type(msg).__name__, exc)

    async def _on_message(self, msg: BusMsg) -> None:
        try:
            ev = OverlayMessageEvent.model_validate_json(msg.data)
        except ValueError as exc:
            log.warning("malformed overlay message event: %s", exc)
            return
        entry = self.conns.get(ev.conn_uid)
        fwd = entry[0] if entry else self.overlay.forwarders.get(ev.peer)
        if fwd is None:
            return
        conn = self.conns[fwd.conn_uid][1]
        sub = _sub_message(conn, ev.tag, ev.payload)
        if sub is not None:
            now = self.loop.time()
            fast = self._sleeve_name(fwd)
            self._run(fwd.control_message(sub[0], sub[1], now), now)
            if self._sleeve_name(fwd) != fast and fwd.state is ForwarderState.ESTABLISHED:
                self._report_sleeve(fwd, conn)  # became (or stopped being) the fast sleeve
            self._flush(now)
            self._wake.set()

    @staticmethod
    def _sleeve_name(fwd: Forwarder) -> str:
        return FAST_SLEEVE if fwd.takes_offload(fwd.remote) else OVERLAY

    def _report_sleeve(self, fwd: Forwarder, conn: OverlayConnection) -> None:
        """Tell gossip the sleeve carries this peer (unless the fastpath does)."""
        if self.switch.using(conn.conn_uid) == FASTPATH:
            return
        mtu = fwd.mtu if fwd.mtu != fr.DEFAULT_MTU else 0
        self._post(subjects.request("gossip", "overlay_established"), OverlayEstablished(
            peer=conn.peer, conn_uid=conn.conn_uid, overlay=self._sleeve_name(fwd), mtu=mtu, encrypted=fwd.encrypted))

    # -- connections and topology --------------------------------------------------------
    async def _on_connection(self, msg: BusMsg) -> None:
        try:
            ev = OverlayConnectionEvent.model_validate_json(msg.data)
        except ValueError as exc:
            log.warning("malformed overlay connection event: %s", exc)
            return
        if ev.kind == "added":
            self.add(ev.connection, resumed=False)
        else:
            self.remove(ev.connection.conn_uid)

    def add(self, conn: OverlayConnection, resumed: bool) -> None:
        if conn.conn_uid in self.conns or OVERLAY not in conn.overlays:
            return
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
        self.conns[conn.conn_uid] = (fwd, conn)
        log.info("sleeve to %s(%s): %s connection %s, %s", conn.peer, conn.nickname,
                 "outbound" if conn.outbound else "inbound", conn.remote_addr,
                 "encrypted" if conn.session_key else "plaintext")
        now = self.loop.time()
        self._run(self.overlay.confirm(fwd, now), now)
        self._flush(now)
        if self.fast_index is not None:
            self._add_fastpath_peer(conn, now)
        self._wake.set()

    def remove(self, conn_uid: int) -> None:
        entry = self.conns.pop(conn_uid, None)
        if entry is None:
            return
        fwd, conn = entry
        self.overlay.stop(fwd)
        self._remove_fastpath_peer(conn)
        ip = fwd.remote_addr[0] if fwd.remote_addr else None
        if ip and not any(f.remote_addr and f.remote_addr[0] == ip for f, _ in self.conns.values()):
            self.udp.forget(ip)

    async def _on_topology(self, msg: BusMsg) -> None:
        try:
            self.apply_topology(TopologyEvent.model_validate_json(msg.data))
        except ValueError as exc:
            log.warning("malformed topology event: %s", exc)

    def apply_topology(self, event: TopologyEvent) -> None:
        for name in self.routes.update(event):
            self.overlay.frame_router.macs.delete_peer(name)

    async def _resync_loop(self) -> None:
        """Snapshots at start (retried until the gossip service answers), then every RESYNC_S."""
        first = True
        while True:
            try:
                topo = await self.bus.request(subjects.request("gossip", "peers"), PeersRequest(), TopologyEvent,
                                              timeout=BUS_TIMEOUT_S)
                snap = await self.bus.request(subjects.request("gossip", "connections"), OverlayConnectionsRequest(),
                                              OverlayConnectionsReply, timeout=BUS_TIMEOUT_S)
            except BusError as exc:
                log.debug("gossip snapshot not available yet: %s", exc)
                await asyncio.sleep(SNAPSHOT_RETRY_S)
                continue
            self.apply_topology(topo)
            live = {c.conn_uid for c in snap.connections}
            for uid in [u for u in self.conns if u not in live] if not first else []:
                self.remove(uid)
            for conn in snap.connections:
                self.add(conn, resumed=True)
            if first and self.fast_index is not None:  # entries the previous process left for gone peers
                paths = self.switch.paths.values()
                index, keep = self.fast_index, {p.address for p in paths if p.allowed}
                flood = {p.address for p in paths if p.using == FASTPATH}
                self._netlink.put_nowait(lambda: fp.prune(index, keep, flood))
                if self.netfilter is not None:
                    self._netlink.put_nowait(lambda: self.netfilter.prune_sources(keep))
            first = False
            await asyncio.sleep(RESYNC_S)

    # -- timers --------------------------------------------------------------------------
    async def _timer_loop(self) -> None:
        while True:
            deadline = min(self.overlay.next_deadline() or float("inf"), self._mac_expiry_at,
                           self.switch.next_deadline() or float("inf"))
            try:
                async with asyncio.timeout_at(deadline):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            now = self.loop.time()
            self._run(self.overlay.tick(now), now)
            self._flush(now)
            self._switch_actions(self.switch.tick(now))
            if now >= self._mac_expiry_at:
                self.overlay.frame_router.macs.expire(now)
                self._mac_expiry_at = now + self.overlay.frame_router.macs.expiry_interval

    # -- fastpath --------------------------------------------------------------------------
    async def _start_fastpath(self) -> None:
        if self.mode == "sleeve":
            if await asyncio.to_thread(fp.destroy_device, self.bridge_port):
                log.info("datapath mode sleeve: fastpath device %s removed", fp.DEVICE)
            return
        try:
            self.fast_mtu = fp.fastpath_mtu(await asyncio.to_thread(fp.underlay_mtu, self.host))
            self.fast_index = await asyncio.to_thread(fp.ensure_device, self.host, self.bridge, self.bridge_port)
            self.hb = fp.HeartbeatSocket()
            try:
                self.netfilter = await asyncio.to_thread(HostIptables)
                await asyncio.to_thread(self.netfilter.ensure_source_filter, fp.PORT)
            except OSError as exc:  # HostIptablesError too
                self.netfilter = None
                log.warning("fastpath source filter not set (%s): %s accepts VXLAN from anyone", exc, fp.DEVICE)
        except (OSError, ValueError) as exc:  # e.g. no vxlan support: sleeve only
            log.warning("fastpath unavailable (%s): sleeve only", exc)
            self.fast_index = None
            self.switch = OverlaySwitch("sleeve")
            return
        self.loop.add_reader(self.hb.fileno(), self._on_heartbeat)
        log.info("fastpath %s on udp %d (vni %#x, mtu %d), mode %s", fp.DEVICE, fp.PORT, fp.VNI, self.fast_mtu,
                 self.mode)

    def _add_fastpath_peer(self, conn: OverlayConnection, now: float) -> None:
        actions = self.switch.add(conn.peer, conn.conn_uid, fp.ip_of(conn.remote_addr), conn.overlays,
                                  conn.session_key, now)
        path = self.switch.paths[conn.conn_uid]
        if path.allowed:
            index, ip, mac = self.fast_index, path.address, str(conn.peer)
            self._netlink.put_nowait(lambda: fp.fdb_set(index, mac, ip, True))
            self._allow_source(ip, True)
        self._switch_actions(actions)

    def _remove_fastpath_peer(self, conn: OverlayConnection) -> None:
        path = self.switch.remove(conn.conn_uid)
        if path is None or self.fast_index is None:
            return
        index, ip, mac = self.fast_index, path.address, str(conn.peer)
        self.fast.discard(conn.peer)
        if path.allowed:
            self._netlink.put_nowait(lambda: fp.fdb_set(index, mac, ip, False))
            if not any(p.allowed and p.address == ip for p in self.switch.paths.values()):
                self._allow_source(ip, False)  # no other connection to that address needs it
        if path.using == FASTPATH:
            self._netlink.put_nowait(lambda: fp.fdb_set(index, fp.ZERO_MAC, ip, False))
            self._netlink.put_nowait(lambda: fp.forget(index, ip))

    def _allow_source(self, ip: str, present: bool) -> None:
        nf = self.netfilter
        if nf is not None:
            self._netlink.put_nowait(lambda: nf.allow_source(ip, present))

    def _on_heartbeat(self) -> None:
        now = self.loop.time()
        for hb in self.hb.recv_all():
            path = self.switch.paths.get(hb.conn_uid)
            if path is None or path.peer != hb.src:
                continue
            self._switch_actions(self.switch.heartbeat(path.peer, hb.conn_uid, hb.hearing, now))
        self._wake.set()

    def _switch_actions(self, actions: list) -> None:
        for a in actions:
            if isinstance(a, SendHeartbeat):
                self.hb.send(fp.encode_heartbeat(self.ourself, a.peer, a.conn_uid, a.hearing))
            elif isinstance(a, Switched):
                self._switched(a)

    def _switched(self, a: Switched) -> None:
        entry = self.conns.get(a.conn_uid)
        path = self.switch.paths.get(a.conn_uid)
        if entry is None or path is None:
            return
        fwd, conn = entry
        index, ip = self.fast_index, path.address
        if a.overlay == FASTPATH:
            self.fast.add(a.peer)
            self._netlink.put_nowait(lambda: fp.fdb_set(index, fp.ZERO_MAC, ip, True))
            log.info("%s(%s): traffic on the fastpath (%s, mtu %d)", conn.peer, conn.nickname, ip, self.fast_mtu)
            self._post(subjects.request("gossip", "overlay_established"), OverlayEstablished(
                peer=conn.peer, conn_uid=conn.conn_uid, overlay=FASTPATH, mtu=self.fast_mtu, encrypted=False))
            return
        self.fast.discard(a.peer)
        if a.previous == FASTPATH:
            self._netlink.put_nowait(lambda: fp.fdb_set(index, fp.ZERO_MAC, ip, False))
            self._netlink.put_nowait(lambda: fp.forget(index, ip))
            log.warning("%s(%s): fastpath heartbeats stopped: traffic back on sleeve", conn.peer, conn.nickname)
            if fwd.state is ForwarderState.ESTABLISHED:
                self._report_sleeve(fwd, conn)

    async def _netlink_loop(self) -> None:
        while True:
            op = await self._netlink.get()
            try:
                await asyncio.to_thread(op)
            except Exception as exc:  # one failed FDB write must not stop the later ones
                log.warning("fastpath fdb update failed: %s", exc)

    # -- status --------------------------------------------------------------------------
    def report(self) -> dict:
        """The Router fields of Weave's /report that the datapath knows, in its shapes:
        OverlayDiagnostics, Interface, CaptureStats and MACs (the MAC cache: which peer
        each MAC is behind, and when it was last seen)."""
        received, dropped = self.port.stats() if self.port is not None else (0, 0)
        to_wall = time.time() - self.loop.time()
        macs = []
        for mac, (peer, seen) in sorted(self.overlay.frame_router.macs.entries().items(), key=lambda kv: kv[1][1]):
            macs.append({"Mac": fp.mac_str(mac), "Name": str(PeerName(peer)),
                         "NickName": self.routes.nicknames.get(peer, ""), "LastSeen": _rfc3339(seen + to_wall)})
        diagnostics: dict = {"sleeve": None}
        if self.mode != "sleeve":
            diagnostics["weave-py-vxlan"] = {
                "Device": fp.DEVICE, "MTU": self.fast_mtu,
                "Peers": sorted(str(p) for p in self.fast)}
        return {"OverlayDiagnostics": diagnostics, "Interface": f"{self.pcap_ifname} (via AF_PACKET)",
                "CaptureStats": {"PacketsDropped": dropped, "PacketsIfDropped": 0, "PacketsReceived": received},
                "MACs": macs}

    def drop_counts(self) -> dict[str, int]:
        counts = dict(self.overlay.drop_counts())
        for reason, n in [*(self.udp.drops.items() if self.udp else ()), *self.trains_in.drops.items()]:
            counts[reason] = counts.get(reason, 0) + n
        if self.inject_drops:
            counts["inject_failed"] = self.inject_drops
        return counts


def _rfc3339(wall: float) -> str:
    """Go's time.Time JSON form, UTC: 2026-11-29T19:34:54.733968Z."""
    return datetime.fromtimestamp(wall, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _sub_message(conn: OverlayConnection, tag: int, payload: bytes) -> tuple[int, bytes] | None:
    """(sleeve sub-tag, body) of a control message, or None if it is for another overlay."""
    if tag == ProtocolTag.OVERLAY_CONTROL:
        if len(payload) < 2 or payload[0] >= len(conn.overlays) or conn.overlays[payload[0]] != OVERLAY:
            return None
        return payload[1], payload[2:]
    if tag in _COMPAT_TAGS and conn.compat:
        return tag, payload
    return None
