"""An in-memory mesh for allocator cores: the IPAM twin of the real gossip boundary
(STYLE.md rule 5), for cluster tests, property tests and demos in one process.

Every message goes through the real codec (bytes on the "wire"). Time is manual
(`advance`), delivery order is FIFO or seeded-random, messages may be lost, peers may
be partitioned and healed, or vanish. Broadcasts and gossip reach every peer in the
sender's partition directly (the real mesh relays them; for IPAM the relayed payload
is the relayer's current state, which carries the same information later).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Hashable

from shared.weave.peer_name import PeerName
from services.ipam import codec
from services.ipam.actions import Action, Broadcast, Persist, Reply, SendUnicast
from services.ipam.allocator import Allocator
from shared.errors import WeaveError


@dataclass(frozen=True)
class Delivery:
    kind: str  # "broadcast", "unicast" or "gossip"
    src: PeerName
    dest: PeerName
    payload: bytes


class MemoryNetwork:
    def __init__(self, seed: int = 0, now: float = 0.0, loss: float = 0.0, shuffle: bool = False) -> None:
        self.rng = random.Random(seed)
        self.now, self.loss, self.shuffle = now, loss, shuffle
        self.allocators: dict[PeerName, Allocator] = {}
        self.queue: list[Delivery] = []
        self.replies: dict[Hashable, Reply] = {}
        self.asked: set[Hashable] = set()
        self.snapshots: dict[PeerName, dict] = {}
        self.errors: list[tuple[PeerName, WeaveError]] = []
        self.group_of: dict[PeerName, int] = {}

    # -- membership and partitions ------------------------------------------------------

    def add(self, alloc: Allocator, snapshot: dict | None = None) -> Allocator:
        """Join a (new or restarted) peer: restore, start, and tell everyone."""
        name = alloc.our_name
        alloc.restore(snapshot)
        self.allocators[name] = alloc
        self.group_of.setdefault(name, 0)
        self._refresh_peers()
        self._handle(name, alloc.start(now=self.now))
        return alloc

    def remove(self, name: PeerName) -> None:
        """The peer vanishes (killed): it neither sends nor receives any more."""
        del self.allocators[name]
        self.group_of.pop(name, None)
        self._refresh_peers()

    def partition(self, *groups) -> None:
        for i, group in enumerate(groups):
            for name in group:
                self.group_of[PeerName(name)] = i
        self._refresh_peers()

    def heal(self) -> None:
        self.partition(list(self.allocators))

    def reachable(self, a: PeerName, b: PeerName) -> bool:
        return a in self.allocators and b in self.allocators and self.group_of[a] == self.group_of[b]

    def _refresh_peers(self) -> None:
        for name, alloc in self.allocators.items():
            known = [n for n in self.allocators if n != name and self.reachable(name, n)]
            self._handle(name, alloc.set_peers(known, now=self.now))

    # -- requests -------------------------------------------------------------------------

    def request(self, name: PeerName, method: str, request_id: Hashable, *args, **kwargs) -> None:
        """Call a request method of one allocator (e.g. "allocate") and route its actions."""
        self.asked.add(request_id)
        alloc = self.allocators[name]
        self._handle(name, getattr(alloc, method)(request_id, *args, now=self.now, **kwargs))

    def unanswered(self) -> set[Hashable]:
        return self.asked - set(self.replies)

    # -- delivery ---------------------------------------------------------------------------

    def _handle(self, src: PeerName, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Reply):
                self.replies[action.request_id] = action
            elif isinstance(action, Persist):
                self.snapshots[src] = self.allocators[src].snapshot()
            elif isinstance(action, Broadcast):
                payload = codec.encode_gossip(action.state)
                for dest in self.allocators:
                    if dest != src and self.reachable(src, dest):
                        self.queue.append(Delivery("broadcast", src, dest, payload))
            elif isinstance(action, SendUnicast):
                self.queue.append(Delivery("unicast", src, action.dest, codec.encode_unicast(action.message)))

    def step(self, index: int | None = None) -> bool:
        """Deliver (or lose) one message, the one at `index` if given; False if none."""
        if not self.queue:
            return False
        if index is None:
            index = self.rng.randrange(len(self.queue)) if self.shuffle else 0
        d = self.queue.pop(index)
        if not self.reachable(d.src, d.dest) or self.rng.random() < self.loss:
            return True
        alloc = self.allocators[d.dest]
        try:
            if d.kind == "broadcast":
                actions = alloc.on_gossip_broadcast(d.src, d.payload, now=self.now)
            elif d.kind == "unicast":
                actions = alloc.on_gossip_unicast(d.src, d.payload, now=self.now)
            else:
                actions = alloc.on_gossip(d.payload, now=self.now)
        except WeaveError as e:  # a refused message: logged by a real shell, nothing changed
            self.errors.append((d.dest, e))
            return True
        self._handle(d.dest, actions)
        return True

    def pump(self, max_steps: int = 1_000_000) -> int:
        """Deliver until quiet; the number of messages handled."""
        for n in range(max_steps):
            if not self.step():
                return n
        raise RuntimeError("network did not go quiet")

    def gossip_round(self) -> None:
        """Every peer gossips its full state to every peer it can reach (the 30 s round)."""
        for src, alloc in self.allocators.items():
            payload = alloc.gossip(self.now)
            for dest in self.allocators:
                if dest != src and self.reachable(src, dest):
                    self.queue.append(Delivery("gossip", src, dest, payload))

    def advance(self, seconds: float) -> None:
        """Move the clock and run every allocator's due tick."""
        self.now += seconds
        for name, alloc in list(self.allocators.items()):
            self._handle(name, alloc.tick(now=self.now))

    def settle(self, rounds: int = 50, tick: float = 5.0) -> bool:
        """Pump; while requests are unanswered: gossip round, tick, pump. True if all answered."""
        self.pump()
        for _ in range(rounds):
            if not self.unanswered():
                return True
            self.gossip_round()
            self.advance(tick)
            self.pump()
        return not self.unanswered()

    # -- checks ------------------------------------------------------------------------------

    def allocated(self) -> list[tuple[PeerName, int]]:
        """(peer, address) for every address any peer has handed out."""
        return [(name, c.addr) for name, a in self.allocators.items() for c in a.owned.all_cidrs()
                if a.ring.contains(c.addr)]

    def assert_safe(self) -> None:
        """No address handed out twice; what each peer's own ring says it owns is
        disjoint from what every other peer's says; each address is in its holder's
        own ranges. Holds at every moment, partitions and lost messages included."""
        addrs = [addr for _, addr in self.allocated()]
        assert len(addrs) == len(set(addrs)), "an address was handed out twice"
        claimed = sorted((r.start, r.end, name) for name, a in self.allocators.items()
                         for r in a.ring.owned_ranges())
        for (s1, e1, n1), (s2, e2, n2) in zip(claimed, claimed[1:]):
            assert e1 <= s2, f"{n1} and {n2} both own addresses from {s2}"
        for name, addr in self.allocated():
            assert self.allocators[name].ring.owner(addr) == name

    def assert_converged(self) -> None:
        """Every peer holds the same ring, and it covers the universe."""
        entries = {str(a.ring.to_dict()["entries"]) for a in self.allocators.values()}
        assert len(entries) == 1, entries
        ring = next(iter(self.allocators.values())).ring
        assert ring.entries and ring.entries[0].token == ring.start
        assert sum(r.size for _, r, _ in ring.all_range_info()) == ring.end - ring.start
