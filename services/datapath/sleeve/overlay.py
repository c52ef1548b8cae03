"""The sleeve overlay of one router (weave:router/sleeve.go `SleeveOverlay`), sans-I/O:
the table of forwarders by remote peer, the UDP receive path and the send path of
captured and relayed frames.

Receive path, per UDP datagram (nothing here raises on remote bytes; every rejected
datagram or frame is counted in `drops` by reason):
1. first 6 bytes = sending peer; no confirmed forwarder for it -> "unknown_sender";
2. the forwarder opens the body (decrypts, checks the replay window) and splits it
   into frames; a broken packet -> its error's reason; a replay -> "replay";
3. per frame: shorter than an Ethernet header -> "short_frame"; source or destination
   peer not in the topology -> "unknown_peer"; special frames go to the forwarder if
   the peer sent them to us ("stray_special" otherwise); other frames go to the frame router.

Offloaded frames (offload.py): `capture` takes the virtio-net header the kernel gave
with the frame; per hop it goes out marked (a peer that takes it) or resolved into
plain frames. A marked frame received from such a peer is unmarked and injected with
its header (`Inject.vnet`); a frame that cannot be resolved is dropped
("offload_unsupported").

Outputs are actions, in order: `Inject(frame, vnet)` for the local bridge plus the
forwarder actions (SendPacket, SendControl, Established, Failed, MTUVerified).
Frames for other peers are batched per forwarder (copied in, so input buffers may
be reused at once): call `flush()` after each burst of `receive`/`capture` calls to
get the remaining datagrams. `Inject` frames are views into the datagram or frame
passed in: write them out before reusing that buffer.
"""
from __future__ import annotations

from collections import Counter
from typing import Container, Hashable, Iterable, NamedTuple

from services.datapath.sleeve import frame as fr
from services.datapath.sleeve import offload
from services.datapath.sleeve.forwarder import Forwarder, Heartbeats, SendPacket
from services.datapath.sleeve.mac_cache import MacCache
from services.datapath.sleeve.ethernet_decoder import icmp_frag_needed, is_df as eth_df
from services.datapath.sleeve.frame_router import Decision, FrameRouter, NextHops, fit_frame
from shared.errors import RemoteProtocolError


class Inject(NamedTuple):
    """Write `frame` to the local bridge, with virtio-net header `vnet` (None: none)."""

    frame: bytes | memoryview
    vnet: bytes | None = None


class Stats:
    """Frames and bytes through the overlay (read by the shell's metrics at scrape time)."""

    __slots__ = ("captured", "captured_bytes", "injected", "injected_bytes", "forwarded", "forwarded_bytes",
                 "relayed", "received_packets", "received_bytes")

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)


class SleeveOverlay:
    """Sleeve for local peer `ourself`. `peers` answers `name in peers` for the peers
    the topology knows (`topology_changed` replaces it); `routes` gives unicast/broadcast
    next hops; `heartbeats` are every forwarder's periods."""

    def __init__(
        self, ourself: int, peers: Container[int], routes: NextHops, macs: MacCache | None = None,
        heartbeats: Heartbeats = Heartbeats(),
    ) -> None:
        self.ourself = ourself
        self.heartbeats = heartbeats
        self.peers = peers
        self.frame_router = FrameRouter(ourself, routes, macs)
        self.forwarders: dict[int, Forwarder] = {}
        """Confirmed forwarders by remote peer: only these receive and send."""
        self.connections: dict[int, Forwarder] = {}
        """Every forwarder made and not stopped, by connection UID (an older connection
        to a peer keeps its forwarder until it is stopped, out of `forwarders`)."""
        self.drops: Counter[str] = Counter()
        self.stats = Stats()

    def make_forwarder(
        self, remote: int, conn_uid: int, outbound: bool,
        remote_addr: Hashable | None = None, session_key: bytes | None = None,
        offload: bool = False, resumed: bool = False, first_seq: int = 0, trains: bool = False,
    ) -> Forwarder:
        """A forwarder for a new mesh connection; it takes part only once confirmed.
        `first_seq`: see crypto.NaClPacker (a resumed connection must not start at 0)."""
        fwd = Forwarder(self.ourself, remote, conn_uid, outbound, remote_addr, session_key, offload, resumed,
                        first_seq, trains, self.heartbeats)
        self.connections[conn_uid] = fwd
        return fwd

    def confirm(self, fwd: Forwarder, now: float) -> list:
        """The mesh confirmed the connection: `fwd` becomes the forwarder to its peer."""
        self.forwarders[fwd.remote] = fwd
        return fwd.confirm(now)

    def stop(self, fwd: Forwarder) -> None:
        """The connection is gone; a newer forwarder for the same peer stays."""
        if self.forwarders.get(fwd.remote) is fwd:
            del self.forwarders[fwd.remote]
        if self.connections.get(fwd.conn_uid) is fwd:
            del self.connections[fwd.conn_uid]
        fwd.stop()

    def topology_changed(self, peers: Container[int], removed: Iterable[int] = ()) -> None:
        """The peers the topology knows now; MACs behind `removed` peers are forgotten."""
        self.peers = peers
        for name in removed:
            self.frame_router.macs.delete_peer(name)

    def msg_too_big(self, addr: tuple, pmtu: int, now: float) -> list:
        """The kernel refused a DF datagram to `addr` (EMSGSIZE; `pmtu` = IP_MTU of the
        path): the path MTU is the host's, so every forwarder to that host (an address's
        first element) learns it."""
        out: list = []
        for fwd in list(self.forwarders.values()):
            if fwd.remote_addr is not None and fwd.remote_addr[0] == addr[0]:
                out += fwd.msg_too_big(pmtu, now)
        return out

    def uses_host(self, host: str) -> bool:
        """Some forwarder sends to `host` (an address's first element)."""
        return any(f.remote_addr is not None and f.remote_addr[0] == host for f in self.connections.values())

    def learn_macs(self, peer: int, macs: Iterable[bytes], now: float) -> None:
        """MACs another overlay carried to and from `peer` (the fastpath's, falling back):
        learnt as behind it, as if frames from them had arrived from it, so frames to
        them go as unicast (a flood too big for sleeve would be dropped, with no
        frag-needed to make TCP resend smaller)."""
        for mac in macs:
            self.frame_router.macs.add_forced(mac, peer, now)

    def expire_macs(self, now: float) -> None:
        """Forget MACs not seen for the cache's max age (call every `mac_expiry_interval`)."""
        self.frame_router.macs.expire(now)

    @property
    def mac_expiry_interval(self) -> float:
        """Seconds between calls of `expire_macs` (the MAC cache's own)."""
        return self.frame_router.macs.expiry_interval

    def macs(self) -> dict[bytes, tuple[int, float]]:
        """MAC -> (peer behind it, when last seen)."""
        return self.frame_router.macs.entries()

    def receive(self, packet: bytes, sender: Hashable, now: float) -> list:
        """Handle one UDP payload from address `sender`."""
        out: list = []
        stats = self.stats
        stats.received_packets += 1
        stats.received_bytes += len(packet)
        frames, fwd = self._open(packet)
        for src, dst, frame in frames:
            if len(frame) < fr.ETHERNET_OVERHEAD:
                self.drops["short_frame"] += 1
            elif src not in self.peers or dst not in self.peers:
                self.drops["unknown_peer"] += 1
            elif fr.is_special(frame):
                self._special(fwd, src, dst, frame, sender, now, out)
            elif dst == self.ourself and fwd.offload and offload.is_marked(frame):
                # only a peer we offered offload to marks, and only frames addressed to
                # us; src may be another peer's (a flood relayed by fwd.remote)
                vnet, plain = offload.unmark(frame)
                self._relay(self.frame_router.forwarded(src, dst, plain, now), plain, now, out, vnet)
            else:
                self._relay(self.frame_router.forwarded(src, dst, frame, now), frame, now, out)
        return out

    def _relay(self, decision: Decision, frame, now: float, out: list, vnet=None) -> None:
        self.stats.relayed += len(decision.hops)
        self._deliver(decision, frame, now, out, vnet)

    def capture(self, frame: bytes | memoryview, now: float, vnet: bytes | memoryview | None = None) -> list:
        """Handle one frame captured on the local bridge, with the kernel's virtio-net
        header if the capture has one."""
        out: list = []
        stats = self.stats
        stats.captured += 1
        stats.captured_bytes += len(frame)
        if vnet is not None and offload.is_plain(vnet):
            vnet = None
        self._deliver(self.frame_router.captured(frame, now), frame, now, out, vnet)
        return out

    def flush(self) -> list[SendPacket]:
        """Datagrams of every frame batched so far, all forwarders."""
        out: list[SendPacket] = []
        for fwd in self.forwarders.values():
            out += fwd.flush()
        return out

    def tick(self, now: float, early: float = 0.0) -> list:
        """Fire every forwarder's due timers (and its heartbeat due within `early`,
        Forwarder.tick)."""
        out: list = []
        for fwd in list(self.forwarders.values()):
            out += fwd.tick(now, early)
        return out

    def drop_counts(self) -> Counter[str]:
        """Every drop so far by reason: datagrams and frames received, routing
        decisions, and frames too big for even an empty packet ("frame_too_big")."""
        counts = self.drops + self.frame_router.drops
        oversized = sum(f.oversized for f in self.forwarders.values())
        if oversized:
            counts["frame_too_big"] += oversized
        return counts

    def next_deadline(self) -> float | None:
        times = [t for t in (f.next_deadline() for f in self.forwarders.values()) if t is not None]
        return min(times) if times else None

    def _open(self, packet: bytes) -> tuple[list, Forwarder | None]:
        try:
            sender_name, body = fr.split_packet(packet)
            fwd = self.forwarders.get(sender_name)
            if fwd is None:
                self.drops["unknown_sender"] += 1
                return [], None
            frames = fwd.open(body)
        except RemoteProtocolError as exc:
            self.drops[getattr(exc, "reason", exc.code)] += 1
            return [], None
        if frames is None:
            self.drops["replay"] += 1
            return [], None
        return frames, fwd

    def _special(self, fwd, src: int, dst: int, frame, sender: Hashable, now: float, out: list) -> None:
        if src == fwd.remote and dst == self.ourself:
            out += fwd.special_frame(frame, sender, now)
        else:
            self.drops["stray_special"] += 1

    def _deliver(self, decision: Decision, frame, now: float, out: list, vnet=None) -> None:
        if decision.inject:
            out.append(Inject(frame, vnet))
            self.stats.injected += 1
            self.stats.injected_bytes += len(frame)
        for hop in decision.hops:
            self._send(hop, frame, decision.broadcast, now, out, vnet)

    def _send(self, hop, frame, broadcast: bool, now: float, out: list, vnet=None) -> None:
        fwd = self.forwarders.get(hop.next_hop)
        if fwd is None:
            self.drops["no_connection"] += 1
            return
        if fwd.remote_addr is None:
            self.drops["awaiting_contact"] += 1
            return
        if vnet is not None:
            self._send_offloaded(fwd, hop, frame, vnet, broadcast, now, out)
            return
        self._send_plain(fwd, hop, frame, broadcast, now, out)

    def _send_offloaded(self, fwd: Forwarder, hop, frame, vnet, broadcast: bool, now: float, out: list) -> None:
        """One marked frame to a peer that takes it, else the resolved plain frames."""
        try:
            if fwd.takes_offload(hop.dst_peer) and fwd.fits_nondf(len(frame) + offload.MARK_OVERHEAD):
                if eth_df(frame) and offload.segment_ip_len(frame, vnet) > fwd.mtu:
                    self._too_big(hop, frame, fwd.mtu, broadcast, now, out)
                    return
                self._forward(fwd, hop, offload.mark(frame, vnet), False, out)
                return
            plain = offload.resolve(frame, vnet)
        except offload.OffloadError:
            self.drops["offload_unsupported"] += 1
            return
        for piece in plain:
            self._send_plain(fwd, hop, piece, broadcast, now, out)

    def _too_big(self, hop, frame, mtu: int, broadcast: bool, now: float, out: list) -> None:
        if broadcast:
            self.drops["df_too_big_broadcast"] += 1
            return
        icmp = icmp_frag_needed(frame, mtu)
        self._deliver(self.frame_router.forwarded(hop.dst_peer, hop.src_peer, icmp, now), icmp, now, out)

    def _forward(self, fwd: Forwarder, hop, frame, df: bool, out: list) -> None:
        self.stats.forwarded += 1
        self.stats.forwarded_bytes += len(frame)
        done = fwd.forward(hop.src_peer, hop.dst_peer, frame, df)
        if done is not None:
            out.append(done)

    def _send_plain(self, fwd: Forwarder, hop, frame, broadcast: bool, now: float, out: list) -> None:
        fit = fit_frame(frame, fwd.mtu, fwd.stack_frag, broadcast)
        if fit.icmp is not None:
            # The frag-needed frame goes back as if dst had sent it to src; it has no
            # DF bit, so this recursion ends after one level.
            self._deliver(self.frame_router.forwarded(hop.dst_peer, hop.src_peer, fit.icmp, now), fit.icmp, now, out)
            return
        if fit.drop is not None:
            self.drops[fit.drop] += 1
            return
        for piece in fit.frames:
            self._forward(fwd, hop, piece, fit.df, out)
