"""An in-memory network of Router cores with a manual clock (the cluster tier's twin
of TCP). Dials reach a router by its "ip:port"; writes are delivered in order; cut
links fail dials and drop connections."""
from __future__ import annotations

import random
from collections import deque

from shared.weave.peer_name import PeerName, PeerUID
from services.gossip.bridged_gossiper import Deliver
from services.gossip.router import Close, Dial, OverlayDown, OverlayMessage, OverlayUp, Router, RouterConfig, Write


class MeshNet:
    def __init__(self, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.now = 1000.0
        self.routers: dict[str, Router] = {}
        self.links: dict[tuple[str, int], tuple[str, int]] = {}
        self.queue: deque[tuple[str, int, bytes]] = deque()
        self.cut: set[frozenset[str]] = set()
        self.delivered: dict[str, list[Deliver]] = {}
        self.overlay_events: dict[str, list] = {}
        self._port = 40000

    def add(self, index: int, *, password: bytes | None = None, discovery: bool = True,
            conn_limit: int = 200, bus_channels: tuple[str, ...] = (), overlays: tuple[str, ...] = (),
            trusted_subnets: tuple[str, ...] = (), trace_context: bool = True) -> str:
        ip = f"10.0.0.{index}"
        cfg = RouterConfig(name=PeerName(0xAA0000000000 + index), nickname=f"p{index}",
                           uid=PeerUID(self.rng.getrandbits(64) | 1), password=password, discovery=discovery,
                           conn_limit=conn_limit, bus_channels=bus_channels, overlays=overlays,
                           trusted_subnets=trusted_subnets, trace_context=trace_context)
        self.routers[ip] = Router(cfg, random.Random(self.rng.getrandbits(32)), self.now)
        return ip

    def connect(self, ip: str, peers: list[str]) -> None:
        self.apply(ip, self.routers[ip].connect(peers, self.now))

    def apply(self, ip: str, actions) -> None:
        for a in actions:
            if isinstance(a, Write):
                dst = self.links.get((ip, a.key))
                if dst is not None:
                    self.queue.append((dst[0], dst[1], a.data))
            elif isinstance(a, Close):
                other = self.links.pop((ip, a.key), None)
                if other is not None:
                    self.links.pop(other, None)
                    self.apply(other[0], self.routers[other[0]].connection_lost(other[1], self.now, "EOF"))
            elif isinstance(a, Dial):
                self._dial(ip, a.address, a.accept_new_peer)
            elif isinstance(a, Deliver):
                self.delivered.setdefault(ip, []).append(a)
            elif isinstance(a, (OverlayUp, OverlayDown, OverlayMessage)):
                self.overlay_events.setdefault(ip, []).append(a)

    def _dial(self, ip: str, address: str, accept_new_peer: bool = True) -> None:
        target_ip = address.split(":")[0]
        target = self.routers.get(target_ip)
        if target is None or frozenset((ip, target_ip)) in self.cut:
            self.apply(ip, self.routers[ip].dial_failed(address, self.now, "connection refused"))
            return
        self._port += 1
        key_out, acts_out = self.routers[ip].open_connection(True, address, self.now, dial_address=address,
                                                             accept_new_peer=accept_new_peer)
        key_in, acts_in = target.open_connection(False, f"{ip}:{self._port}", self.now)
        self.links[(ip, key_out)] = (target_ip, key_in)
        self.links[(target_ip, key_in)] = (ip, key_out)
        self.apply(ip, acts_out)
        self.apply(target_ip, acts_in)

    def pump(self, limit: int = 200_000) -> None:
        n = 0
        while self.queue:
            ip, key, data = self.queue.popleft()
            if (ip, key) in self.links:
                self.apply(ip, self.routers[ip].receive(key, data, self.now))
            n += 1
            assert n < limit, "the mesh never went quiet"

    def run(self, seconds: float) -> None:
        """Advance time to each router deadline in turn, ticking and pumping."""
        end = self.now + seconds
        self.pump()
        while True:
            deadlines = [d for r in self.routers.values() if (d := r.next_deadline()) is not None]
            nxt = min(deadlines, default=end)
            if nxt > end:
                break
            self.now = max(self.now, nxt)
            for ip, r in list(self.routers.items()):
                self.apply(ip, r.tick(self.now))
            self.pump()
        self.now = end

    def sever(self, a: str, b: str) -> None:
        """Cut the link between two hosts: drop their connections, fail new dials."""
        self.cut.add(frozenset((a, b)))
        for (ip, key), (oip, okey) in list(self.links.items()):
            if {ip, oip} == {a, b} and (ip, key) in self.links:
                self.links.pop((ip, key))
                self.links.pop((oip, okey), None)
                self.apply(ip, self.routers[ip].connection_lost(key, self.now, "link cut"))
                self.apply(oip, self.routers[oip].connection_lost(okey, self.now, "link cut"))

    def heal(self, a: str, b: str) -> None:
        self.cut.discard(frozenset((a, b)))
