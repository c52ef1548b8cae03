"""Forwarding decisions for overlay frames (weave:router/network_router.go and the
MTU part of sleeve.go `Process`), as pure functions over a MAC cache and routes.

Captured frame (from the local bridge):
1. learn src MAC -> us; if the MAC is known at another peer, drop ("looped": most
   likely a frame we injected coming back);
2. drop STP (dst 01:80:c2:00:00:00);
3. dst MAC known here -> drop ("local_destination": the bridge delivers it);
   dst MAC known at peer P -> unicast: one hop to `routes.unicast(P)`, DstPeer = P;
   unknown, broadcast or multicast -> one hop per `routes.broadcast(us)` next hop,
   each copy with DstPeer = that hop.
Received frame (from the overlay, with SrcPeer/DstPeer):
1. DstPeer != us -> relay towards DstPeer via the unicast route (no MAC learning);
2. else force-learn src MAC -> SrcPeer, inject locally, and unless the dst MAC is
   local, relay along `routes.broadcast(SrcPeer)` (so multicast floods like broadcast).
Drops are counted in `FrameRouter.drops` by reason; a missing route is a drop, not an error.

Per next hop, `fit_frame` applies the forwarder's MTU: DF IPv4 frames larger than the
MTU get an ICMP "fragmentation needed" sent back to the sender when unicast and are
dropped when broadcast (a broadcast may reach hops with other MTUs); non-DF IPv4
frames go on the DF channel (fragmented by us if needed) until the peer confirmed
the kernel's fragments arrive (`stack_frag`); non-IP frames always go non-DF.
"""
from __future__ import annotations

from collections import Counter
from typing import NamedTuple, Protocol

from services.datapath.sleeve import ethernet_decoder as eth
from services.datapath.sleeve.mac_cache import MacCache


class NextHops(Protocol):
    """What the frame router needs of the mesh's routes (the gossip service's Routes, as
    TopologyEvents bring them: datapath.topology.TopologyRoutes)."""

    def unicast(self, name: int) -> int | None:
        """Next hop towards `name` over established connections; None if unreachable."""

    def broadcast(self, source: int) -> list[int]:
        """Our next hops for a broadcast that originated at `source`."""


class Hop(NamedTuple):
    """Send the frame to forwarder `next_hop`, labelled src_peer -> dst_peer."""

    next_hop: int
    src_peer: int
    dst_peer: int


class Decision(NamedTuple):
    inject: bool
    """Deliver the frame to the local bridge."""
    hops: list[Hop]
    broadcast: bool
    """The hops flood the frame (ICMP frag-needed is never sent for those)."""


class Fit(NamedTuple):
    """How one frame goes out on one forwarder: `frames` on the DF channel or not;
    or `icmp` to deliver back to the sender instead; or dropped for `drop`."""

    df: bool
    frames: tuple
    icmp: bytes | None = None
    drop: str | None = None


_NOTHING = Decision(False, [], False)
_INJECT = Decision(True, [], False)


class FrameRouter:
    """Forwarding decisions of peer `ourself`. Times are seconds, for the MAC cache."""

    def __init__(self, ourself: int, routes: NextHops, macs: MacCache | None = None) -> None:
        self.ourself = ourself
        self.routes = routes
        self.macs = macs if macs is not None else MacCache()
        self.drops: Counter[str] = Counter()
        self.mac_moves = 0
        """Remote MACs seen behind a different peer than before (fastdp flushes flows)."""

    def captured(self, frame: bytes | memoryview, now: float) -> Decision:
        """Where a frame captured on the local bridge goes."""
        if len(frame) < eth.ETHERNET_HEADER:
            return self._drop("short_frame")
        dst_mac, src_mac = eth.macs(frame)
        _, conflict = self.macs.add(src_mac, self.ourself, now)
        if conflict is not None:
            return self._drop("looped")
        if dst_mac == eth.STP_MAC:
            return self._drop("stp")
        dst_peer = self.macs.lookup(dst_mac)
        if dst_peer == self.ourself:
            return self._drop("local_destination")
        if dst_peer is None:
            return self._broadcast(self.ourself, inject=False)
        return self._unicast(self.ourself, dst_peer)

    def forwarded(self, src_peer: int, dst_peer: int, frame: bytes | memoryview, now: float) -> Decision:
        """Where a frame that arrived over the overlay goes."""
        if dst_peer != self.ourself:
            return self._unicast(src_peer, dst_peer)
        if len(frame) < eth.ETHERNET_HEADER:
            return self._drop("short_frame")
        dst_mac, src_mac = eth.macs(frame)
        _, moved_from = self.macs.add_forced(src_mac, src_peer, now)
        if moved_from is not None:
            self.mac_moves += 1
        if self.macs.lookup(dst_mac) == self.ourself:
            return _INJECT
        return self._broadcast(src_peer, inject=True)

    def _unicast(self, src_peer: int, dst_peer: int) -> Decision:
        next_hop = self.routes.unicast(dst_peer)
        if next_hop is None:
            return self._drop("unknown_destination")
        return Decision(False, [Hop(next_hop, src_peer, dst_peer)], False)

    def _broadcast(self, src_peer: int, inject: bool) -> Decision:
        hops = [Hop(h, src_peer, h) for h in self.routes.broadcast(src_peer)]
        if not hops and not inject:
            return self._drop("no_broadcast_route")
        return Decision(inject, hops, True)

    def _drop(self, reason: str) -> Decision:
        self.drops[reason] += 1
        return _NOTHING


def fit_frame(frame: bytes | memoryview, mtu: int, stack_frag: bool, broadcast: bool) -> Fit:
    """Channel and frames for sending `frame` over a forwarder with overlay `mtu`."""
    ihl = eth.ipv4_header_len(frame)
    if ihl and frame[eth.ETHERNET_HEADER + 6] & 0x40:
        if not eth.frame_too_big(frame, mtu):
            return Fit(True, (frame,))
        if broadcast:
            return Fit(True, (), drop="df_too_big_broadcast")
        return Fit(True, (), icmp=eth.icmp_frag_needed(frame, mtu))
    if stack_frag or not ihl:
        return Fit(False, (frame,))
    if not eth.frame_too_big(frame, mtu):
        return Fit(True, (frame,))
    fragments = eth.fragment(frame, mtu)
    if not fragments:
        return Fit(True, (), drop="mtu_too_small")
    return Fit(True, tuple(fragments))
