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
   the peer sent them to us ("stray_special" otherwise); other frames go to the router.

Outputs are actions, in order: `Inject(frame)` for the local bridge plus the
forwarder actions (SendPacket, SendControl, Established, Failed, MTUVerified).
Frames for other peers are batched per forwarder (copied in, so input buffers may
be reused at once): call `flush()` after each burst of `receive`/`capture` calls to
get the remaining datagrams. `Inject` frames are views into the datagram or frame
passed in: write them out before reusing that buffer.
"""
from __future__ import annotations

from collections import Counter
from typing import Container, Hashable, NamedTuple

from services.datapath.sleeve import frame as fr
from services.datapath.sleeve.forwarder import Forwarder, SendPacket
from services.datapath.sleeve.mac_cache import MacCache
from services.datapath.sleeve.router import Decision, Router, Routes, fit_frame
from shared.errors import RemoteProtocolError


class Inject(NamedTuple):
    """Write `frame` to the local bridge."""

    frame: bytes | memoryview


class SleeveOverlay:
    """Sleeve for local peer `ourself`. `peers` answers `name in peers` for the peers
    the topology knows; `routes` gives unicast/broadcast next hops."""

    def __init__(
        self, ourself: int, peers: Container[int], routes: Routes, macs: MacCache | None = None
    ) -> None:
        self.ourself = ourself
        self.peers = peers
        self.router = Router(ourself, routes, macs)
        self.forwarders: dict[int, Forwarder] = {}
        """Confirmed forwarders by remote peer: only these receive and send."""
        self.drops: Counter[str] = Counter()

    def make_forwarder(
        self, remote: int, conn_uid: int, outbound: bool,
        remote_addr: Hashable | None = None, session_key: bytes | None = None,
    ) -> Forwarder:
        """A forwarder for a new mesh connection; it takes part only once confirmed."""
        return Forwarder(self.ourself, remote, conn_uid, outbound, remote_addr, session_key)

    def confirm(self, fwd: Forwarder, now: float) -> list:
        """The mesh confirmed the connection: `fwd` becomes the forwarder to its peer."""
        self.forwarders[fwd.remote] = fwd
        return fwd.confirm(now)

    def stop(self, fwd: Forwarder) -> None:
        """The connection is gone; a newer forwarder for the same peer stays."""
        if self.forwarders.get(fwd.remote) is fwd:
            del self.forwarders[fwd.remote]
        fwd.stop()

    def receive(self, packet: bytes, sender: Hashable, now: float) -> list:
        """Handle one UDP payload from address `sender`."""
        out: list = []
        frames, fwd = self._open(packet)
        for src, dst, frame in frames:
            if len(frame) < fr.ETHERNET_OVERHEAD:
                self.drops["short_frame"] += 1
            elif src not in self.peers or dst not in self.peers:
                self.drops["unknown_peer"] += 1
            elif fr.is_special(frame):
                self._special(fwd, src, dst, frame, sender, now, out)
            else:
                self._deliver(self.router.forwarded(src, dst, frame, now), frame, now, out)
        return out

    def capture(self, frame: bytes | memoryview, now: float) -> list:
        """Handle one frame captured on the local bridge."""
        out: list = []
        self._deliver(self.router.captured(frame, now), frame, now, out)
        return out

    def flush(self) -> list[SendPacket]:
        """Datagrams of every frame batched so far, all forwarders."""
        out: list[SendPacket] = []
        for fwd in self.forwarders.values():
            out += fwd.flush()
        return out

    def tick(self, now: float) -> list:
        """Fire every forwarder's due timers."""
        out: list = []
        for fwd in list(self.forwarders.values()):
            out += fwd.tick(now)
        return out

    def drop_counts(self) -> Counter[str]:
        """Every drop so far by reason: datagrams and frames received, routing
        decisions, and frames too big for even an empty packet ("frame_too_big")."""
        counts = self.drops + self.router.drops
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

    def _deliver(self, decision: Decision, frame, now: float, out: list) -> None:
        if decision.inject:
            out.append(Inject(frame))
        for hop in decision.hops:
            self._send(hop, frame, decision.broadcast, now, out)

    def _send(self, hop, frame, broadcast: bool, now: float, out: list) -> None:
        fwd = self.forwarders.get(hop.next_hop)
        if fwd is None:
            self.drops["no_connection"] += 1
            return
        if fwd.remote_addr is None:
            self.drops["awaiting_contact"] += 1
            return
        fit = fit_frame(frame, fwd.mtu, fwd.stack_frag, broadcast)
        if fit.icmp is not None:
            # The frag-needed frame goes back as if dst had sent it to src; it has no
            # DF bit, so this recursion ends after one level.
            self._deliver(self.router.forwarded(hop.dst_peer, hop.src_peer, fit.icmp, now), fit.icmp, now, out)
            return
        if fit.drop is not None:
            self.drops[fit.drop] += 1
            return
        for piece in fit.frames:
            done = fwd.forward(hop.src_peer, hop.dst_peer, piece, fit.df)
            if done is not None:
                out.append(done)
