"""The IPAM allocator core for one peer (weave:ipam/allocator.go), sans-I/O.

It owns the ring, our space, the owned-address map and (until there is a ring) the
Paxos participant. Inputs are local requests, gossip from peers, peer-set changes and
`tick(now)`; each returns a list of actions (actions.py) for the shell to carry out.
Time is always a parameter; the core never reads a clock.

Lifecycle: construct -> optional `restore(snapshot)` -> `start(now)` -> inputs.
Requests carry an opaque `request_id`; ones that must wait (no ring yet, space asked
from a peer) stay pending and are answered later, from whichever input completes them.
After every input the allocator reports its free space into the ring (bumping those
entries' versions) and checks that ring and space agree.

Gossip flow, as in Weave: a ring-less broadcast from a named sender is answered by a
unicast RingUpdate if we have a ring; an elector with no ring that receives such a
broadcast without Paxos state (an observer asking) starts an election. Periodic gossip
(`on_gossip`) is merged but never answered.
"""
from __future__ import annotations

import random
from typing import Hashable, Iterable, Mapping

from services.gossip.peer_name import UNKNOWN_PEER_NAME, PeerName
from services.ipam.actions import Action, Broadcast, Persist, Reply, SendUnicast
from services.ipam.address import CIDR, AddressError, Range, format_ip, parse_cidr, parse_subnet
from services.ipam.allocate import Allocate, Prime
from services.ipam.claim import Claim
from services.ipam.config import AllocatorConfig
from services.ipam.errors import DifferentRangeError, DifferentSeedsError, RequestError
from services.ipam.messages import (GossipState, RingUpdate, SpaceRequest, SpaceRequestDenied,
                                    Unicast)
from services.ipam.owned import Owned
from services.ipam.paxos import Node, Observer, Participant
from services.ipam.persistence import load_snapshot, make_snapshot
from services.ipam.ring import Ring
from services.ipam.space import Space
from shared.errors import LocalProtocolError


class Allocator:
    def __init__(self, config: AllocatorConfig) -> None:
        self.config = config
        self.our_name = config.our_name
        self.universe = config.universe
        self.ring = Ring(config.universe.range().start, config.universe.range().end, config.our_name)
        self.space = Space()
        self.owned = Owned()
        self.nicknames: dict[PeerName, str] = {config.our_name: config.our_nickname}
        self.known_peers: set[PeerName] = set()
        self.pending_allocates: list[Allocate] = []
        self.pending_claims: list[Claim] = []
        self.pending_primes: list[Prime] = []
        self.dead: dict[str, float] = {}
        self.paxos: Participant | None = (Observer() if config.observer
                                          else Node(config.our_name, config.our_uid))
        self.quorum = config.quorum
        self.awaiting_consensus = False
        self.shutting_down = False
        self.rng = random.Random(config.random_seed)
        self.now = 0.0
        self.next_tick: float | None = None
        self._out: list = []
        self._broadcast = self._persist = False

    # -- lifecycle --------------------------------------------------------------

    def restore(self, snapshot: Mapping | None) -> bool:
        """Load persisted state; False (and nothing loaded) if it is for another peer
        name or range, or unusable, as Weave discards such data."""
        loaded = load_snapshot(snapshot, self.our_name, self.universe)
        if loaded is None:
            return False
        self.ring, self.owned = loaded
        self.space.update_ranges(self.ring.owned_ranges())
        for cidr in self.owned.all_cidrs():
            if self.ring.contains(cidr.addr) and self.space.is_free(cidr.addr):
                self.space.claim(cidr.addr)
        return True

    def start(self, now: float) -> list[Action]:
        self.now, self.next_tick = now, now + self.config.tick_interval
        if self.ring.empty() and self.config.seed:
            self.create_ring(self.config.seed)
        return self._drain()

    def snapshot(self) -> dict:
        """Plain-data persistence snapshot: peer name, range, ring, owned addresses."""
        return make_snapshot(self.our_name, self.universe, self.ring, self.owned)

    def next_deadline(self) -> float | None:
        return self.next_tick

    def tick(self, now: float) -> list[Action]:
        """Retry what may have been lost (every tick_interval): re-propose while awaiting
        consensus, else retry pending operations; drop addresses of long-dead containers."""
        self.now = now
        if self.next_tick is None or now < self.next_tick or self.shutting_down:
            return self._drain()
        self.next_tick = now + self.config.tick_interval
        if self.awaiting_consensus:
            self.propose()
        else:
            self.try_pending_ops()
        self._remove_dead_containers(now)
        return self._drain()

    # -- requests -----------------------------------------------------------------

    def allocate(self, request_id: Hashable, ident: str, subnet: str | CIDR | None, now: float,
                 is_container: bool = True) -> list[Action]:
        """An address for ident in subnet (default subnet if None); replies with a CIDR."""
        self.now = now
        try:
            cidr = self.config.default_subnet if subnet is None else _subnet(subnet)
        except AddressError as e:
            return self._fail(request_id, RequestError(str(e), code="bad_request", text=e.text))
        self._do(Allocate(request_id, ident, cidr, is_container), self.pending_allocates)
        return self._drain()

    def claim(self, request_id: Hashable, ident: str, cidr: str | CIDR, now: float,
              is_container: bool = True, no_error_on_unknown: bool = False) -> list[Action]:
        """Claim a specific address (`a.b.c.d/len`) for ident; replies None on success."""
        self.now = now
        try:
            parsed = parse_cidr(cidr) if isinstance(cidr, str) else cidr
        except AddressError as e:
            return self._fail(request_id, RequestError(str(e), code="bad_request", text=e.text))
        self._do(Claim(request_id, ident, parsed, is_container, no_error_on_unknown), self.pending_claims)
        return self._drain()

    def prime(self, request_id: Hashable, now: float) -> list[Action]:
        """Reply once we have a ring, asking for an election if needed (GET /ring)."""
        self.now = now
        self._do(Prime(request_id), self.pending_primes)
        return self._drain()

    def lookup(self, ident: str, subnet: str | CIDR | None = None) -> list[CIDR]:
        """Addresses ident holds in subnet (anywhere if None). A query: no actions."""
        r = Range(0, 1 << 32) if subnet is None else _subnet(subnet).range()
        return self.owned.in_range(ident, r)

    def release(self, request_id: Hashable, ident: str, addr: int, now: float) -> list[Action]:
        """Free one address held by ident."""
        self.now = now
        if not self.owned.remove(ident, addr):
            return self._fail(request_id, RequestError(
                f"Free: address {format_ip(addr)} not found for {ident}", code="not_found"))
        self._free_addresses([addr])
        self.reply(request_id)
        return self._drain()

    def delete(self, request_id: Hashable, ident: str, now: float) -> list[Action]:
        """Free every address held by ident (a container went away)."""
        self.now = now
        cidrs = self.owned.remove_all(ident)
        if not cidrs:
            return self._fail(request_id, RequestError(f"Delete: no addresses for {ident}", code="not_found"))
        self._free_addresses([c.addr for c in cidrs])
        self.dead.pop(ident, None)
        self.reply(request_id)
        return self._drain()

    def cancel(self, request_id: Hashable, now: float) -> list[Action]:
        """The requester gave up: drop its pending operation, replying "cancelled"."""
        self.now = now
        for ops in (self.pending_allocates, self.pending_claims, self.pending_primes):
            for op in [op for op in ops if op.request_id == request_id]:
                ops.remove(op)
                op.cancel(self)
        return self._drain()

    def container_died(self, ident: str, now: float) -> list[Action]:
        """Its addresses are freed container_died_timeout later unless it comes back."""
        self.now = now
        if ident in self.owned:
            self.dead[ident] = now
        self._cancel_ops_for(ident)
        return self._drain()

    def rmpeer(self, request_id: Hashable, peer: str, now: float) -> list[Action]:
        """Take over every range of a (dead) peer, by name or nickname; replies with
        the number of addresses gained."""
        self.now = now
        name = self._lookup_peername(peer)
        if name is None:
            return self._fail(request_id, RequestError(f"unknown peer {peer!r}", code="unknown_peer"))
        if name == self.our_name:
            return self._fail(request_id, RequestError("cannot take over ranges from ourself",
                                                       code="bad_request"))
        if not self.ring.transfer(name, self.our_name):
            self.reply(request_id, 0)
            return self._drain()
        before = self.space.num_free()
        self.ring_updated()
        self.reply(request_id, self.space.num_free() - before)
        self._broadcast = True
        return self._drain()

    def shutdown(self, now: float) -> list[Action]:
        """Leave (weave reset): cancel pending requests, hand our ranges to an heir."""
        self.now = now
        self.shutting_down = True
        for ops in (self.pending_claims, self.pending_allocates, self.pending_primes):
            for op in ops:
                op.cancel(self)
            ops.clear()
        heir = self._pick_peer_for_transfer()
        self.ring.transfer(self.our_name, heir)
        self.space.clear()
        if heir != UNKNOWN_PEER_NAME:
            self._persist = self._broadcast = True
        return self._drain()

    # -- peers ----------------------------------------------------------------------

    def set_peers(self, known: Iterable[PeerName], now: float,
                  nicknames: Mapping[PeerName, str] | None = None) -> list[Action]:
        """The peers the mesh currently knows (reachable). Nicknames of peers gone from
        both the mesh and the ring are forgotten, as Weave's PeerGone does."""
        self.now = now
        self.known_peers = {PeerName(p) for p in known}
        self.nicknames.update(nicknames or {})
        self.prune_nicknames()
        return self._drain()

    def set_quorum(self, quorum: int) -> None:
        self.quorum = quorum

    def is_known_peer(self, name: PeerName) -> bool:
        return name == self.our_name or name in self.known_peers

    # -- gossip -----------------------------------------------------------------------

    def gossip_state(self, now: float | None = None) -> GossipState:
        """Our current full state (a copy), as sent in gossip and broadcasts."""
        state = GossipState(int(self.now if now is None else now), dict(self.nicknames))
        if self.ring.empty():
            state.paxos = self.paxos.gossip_state() if self.paxos else None
        else:
            state.ring = self.ring.copy()
        return state

    def on_gossip(self, state: GossipState, now: float) -> list[Action]:
        """Periodic gossip from a neighbour: merged, never answered or relayed."""
        self.now = now
        self.update(UNKNOWN_PEER_NAME, state)
        return self._drain()

    def on_gossip_broadcast(self, sender: PeerName, state: GossipState, now: float) -> list[Action]:
        """A broadcast originated by sender. The shell relays our *current* state."""
        self.now = now
        self.update(PeerName(sender), state)
        return self._drain()

    def on_gossip_unicast(self, sender: PeerName, message: Unicast, now: float) -> list[Action]:
        self.now = now
        if isinstance(message, SpaceRequest):
            if not self.ring.empty():  # no ring: ignore; they will ask again
                self._donate_space(message.range, PeerName(sender))
        elif isinstance(message, SpaceRequestDenied):
            self._space_request_denied(PeerName(sender), message.range)
        elif isinstance(message, RingUpdate):
            self.update(PeerName(sender), message.state)
        else:
            raise LocalProtocolError(f"not an IPAM unicast: {message!r}")
        return self._drain()

    def update(self, sender: PeerName, state: GossipState) -> None:
        """Merge received state. Raises a RingError (nothing changed) if the ring is refused."""
        if state.ring is not None:
            self._merge_ring(state)
        elif not self.ring.empty():
            self.nicknames.update(state.nicknames)
            if sender != UNKNOWN_PEER_NAME:
                self._out.append(("ring_update", sender))
        elif state.paxos is not None:
            self.nicknames.update(state.nicknames)
            self._paxos_update(state)
        else:
            self.nicknames.update(state.nicknames)
            if self.paxos is not None and self.paxos.is_elector() and sender != UNKNOWN_PEER_NAME:
                self.establish_ring()

    def _merge_ring(self, state: GossipState) -> None:
        try:
            updated = self.ring.merge(state.ring, self.space.has_allocations)
        except DifferentSeedsError as e:
            raise DifferentSeedsError(
                f"IP allocation was seeded by different peers (received: {self._annotate(state.ring.seeds)}, "
                f"ours: {self._annotate(self.ring.seeds)})", **e.attrs) from e
        except DifferentRangeError as e:
            raise DifferentRangeError(
                f"Incompatible IP allocation ranges (received: {state.ring.range.as_cidr_string()}, "
                f"ours: {self.ring.range.as_cidr_string()})", **e.attrs) from e
        self.nicknames.update(state.nicknames)
        if updated:
            self.prune_nicknames()
            self.ring_updated()

    def _paxos_update(self, state: GossipState) -> None:
        if self.paxos is None or not self.paxos.update(state.paxos):
            return
        if self.paxos.think():
            self._broadcast = True
        consensus = self.paxos.consensus()
        if consensus is not None:
            self.create_ring(consensus.value)

    # -- operation support (used by allocate.py / claim.py) -----------------------------

    def reply(self, request_id: Hashable, result: object = None, error: RequestError | None = None) -> None:
        self._out.append(Reply(request_id, result, error))

    def add_owned(self, ident: str, cidr: CIDR, is_container: bool) -> None:
        self.owned.add(ident, cidr, is_container)
        self._persist = True

    def establish_ring(self) -> None:
        """Make progress towards a ring: start an election unless one runs or a ring exists."""
        if not self.ring.empty() or self.awaiting_consensus or self.paxos is None:
            return
        self.awaiting_consensus = True
        self.paxos.set_quorum(self.quorum)
        self.propose()
        consensus = self.paxos.consensus()
        if consensus is not None:  # a quorum of 1 agrees at once
            self.create_ring(consensus.value)

    def propose(self) -> None:
        if self.paxos is not None:
            self.paxos.propose()
        self._broadcast = True

    def create_ring(self, peers: Iterable[PeerName]) -> None:
        self.ring.claim_for_peers(peers)
        self.ring_updated()
        self._broadcast = True

    def ring_updated(self) -> None:
        if self.awaiting_consensus:  # with a ring, Paxos is over
            self.awaiting_consensus = False
            self.paxos = None
        self._persist = True
        self.space.update_ranges(self.ring.owned_ranges())
        self.try_pending_ops()

    def send_space_request(self, dest: PeerName, r: Range) -> bool:
        """False if dest is unreachable (Weave: GossipUnicast fails with no route)."""
        if not self.is_known_peer(dest):
            return False
        self._out.append(SendUnicast(dest, SpaceRequest(r)))
        return True

    def ask_for_space(self, r: Range) -> None:
        for donor in self.ring.choose_peers_to_ask_for_space(r.start, r.end, self.rng):
            if self.send_space_request(donor, r):
                return

    def try_pending_ops(self) -> None:
        # Primes first; claims before allocations, so claimed addresses are not handed out.
        for ops in (self.pending_primes, self.pending_claims, self.pending_allocates):
            ops[:] = [op for op in list(ops) if not op.try_(self)]

    # -- internals ------------------------------------------------------------------------

    def _do(self, op, queue: list) -> None:
        if self.shutting_down:
            op.cancel(self)
        elif not op.try_(self):
            queue.append(op)

    def _fail(self, request_id: Hashable, error: RequestError) -> list[Action]:
        self.reply(request_id, error=error)
        return self._drain()

    def _free_addresses(self, addrs: list[int]) -> None:
        for addr in addrs:
            if self.ring.contains(addr) and not self.space.is_free(addr):
                self.space.release(addr)
        self._persist = True

    def _cancel_ops_for(self, ident: str) -> None:
        for ops in (self.pending_allocates, self.pending_claims):
            for op in [op for op in ops if op.ident == ident]:
                ops.remove(op)
                op.cancel(self)

    def _remove_dead_containers(self, now: float) -> None:
        for ident, died in list(self.dead.items()):
            if died < now - self.config.container_died_timeout:
                del self.dead[ident]
                self._free_addresses([c.addr for c in self.owned.remove_all(ident)])

    def _donate_space(self, r: Range, to: PeerName) -> None:
        chunk = self.space.donate(r)
        if chunk is None:
            self._out.append(SendUnicast(to, SpaceRequestDenied(r)))
        else:
            self.ring.grant_range_to_host(chunk.start, chunk.end, to)
            self._persist = self._broadcast = True
        self._out.append(("ring_update", to))  # always: where else space may be found

    def _space_request_denied(self, sender: PeerName, r: Range) -> None:
        for claim in [c for c in self.pending_claims if r.contains(c.cidr.addr)]:
            self.pending_claims.remove(claim)
            claim.denied_by(self, sender)

    def _pick_peer_for_transfer(self) -> PeerName:
        others = [n for n in self.nicknames if n != self.our_name]
        for candidate in (self.ring.pick_peer_for_transfer(self.is_known_peer),
                          next((n for n in others if self.is_known_peer(n)), UNKNOWN_PEER_NAME),
                          self.ring.pick_peer_for_transfer(lambda _: True),
                          next(iter(others), UNKNOWN_PEER_NAME)):
            if candidate != UNKNOWN_PEER_NAME:
                return candidate
        return UNKNOWN_PEER_NAME

    def _lookup_peername(self, text: str) -> PeerName | None:
        for name, nickname in self.nicknames.items():
            if nickname == text:
                return name
        try:
            return PeerName.parse(text)
        except ValueError:
            return None

    def prune_nicknames(self) -> None:
        ring_peers = self.ring.peer_names()
        for name in list(self.nicknames):
            if name not in ring_peers and not self.is_known_peer(name):
                del self.nicknames[name]

    def _annotate(self, names: Iterable[PeerName]) -> list[str]:
        return [f"{n}({self.nicknames[n]})" if n in self.nicknames else str(n) for n in names]

    def _report_free_space(self) -> None:
        freespace = {}
        for i, e in enumerate(self.ring.entries):
            if e.peer == self.our_name:
                nxt = self.ring.entries[(i + 1) % len(self.ring.entries)].token
                freespace[e.token] = sum(self.space.num_free_in_range(r)
                                         for r in self.ring.make_ranges(e.token, nxt))
        if freespace:
            self.ring.report_free(freespace)

    def assert_invariants(self) -> None:
        """The ring's view of what we own and our space must be the same addresses."""
        self.ring.assert_invariants()
        self.space.assert_invariants()
        check = Space()
        check.add_ranges(self.ring.owned_ranges())
        if check.owned_ranges() != self.space.owned_ranges():
            raise LocalProtocolError(f"ring and space disagree: {check.owned_ranges()} "
                                     f"vs {self.space.owned_ranges()}")

    def _drain(self) -> list[Action]:
        if not self.shutting_down:
            self._report_free_space()
            self.assert_invariants()
        actions: list[Action] = []
        for item in self._out:
            if isinstance(item, tuple):
                actions.append(SendUnicast(item[1], RingUpdate(self.gossip_state())))
            else:
                actions.append(item)
        if self._broadcast:
            actions.append(Broadcast(self.gossip_state()))
        if self._persist:
            actions.append(Persist())
        self._out, self._broadcast, self._persist = [], False, False
        return actions


def _subnet(subnet: str | CIDR) -> CIDR:
    return parse_subnet(subnet) if isinstance(subnet, str) else subnet
