"""The IPAM allocator core for one peer (weave:ipam/allocator.go), sans-I/O.

It owns the ring, our space, the owned-address map and (until there is a ring) the
Paxos participant. Inputs are local requests, gossip from peers, peer-set changes and
`tick`; every input takes `now=` (seconds) and returns the actions (actions.py) the
shell must carry out. The core never reads a clock.

Lifecycle: construct -> optional `restore(snapshot)` -> `start(now=)` -> inputs.
Requests carry an opaque `request_id`; ones that must wait (no ring yet, space asked
from a peer) stay pending and are answered later, by whichever input completes them.
After every input the allocator reports its free space into the ring (bumping those
entries' versions, as Weave's actor loop does) and checks that ring and space agree.
An input that raises (a refused ring: RingError) has changed nothing.

What received gossip does is in gossip.py; pending operations are in allocate.py and
claim.py, and use the "operation support" methods below.
"""
from __future__ import annotations

import functools
import random
from typing import Hashable, Iterable, Mapping

from shared.weave.peer_name import UNKNOWN_PEER_NAME, PeerName
from services.ipam import codec, gossip
from services.ipam.actions import Action, Broadcast, Persist, Reply, SendUnicast
from services.ipam.address import CIDR, AddressError, Range, format_ip, parse_cidr, parse_ip, parse_subnet
from services.ipam.allocate import Allocate, Prime
from services.ipam.claim import Claim
from services.ipam.config import AllocatorConfig
from services.ipam.errors import RequestError
from services.ipam.messages import IpamGossip, RingUpdate, SpaceRequest, SpaceRequestDenied, Unicast
from services.ipam.owned import Owned
from services.ipam.paxos import Node, Observer, Participant
from services.ipam.persistence import load_snapshot, make_delta, make_snapshot
from services.ipam.ring import Ring
from services.ipam.space import Space, coalesce
from services.ipam.transfer import lookup_peername, pick_heir
from shared.errors import LocalProtocolError


def _input(method):
    """Record `now`, run the input, then return the actions it produced."""
    @functools.wraps(method)
    def run(self: "Allocator", *args, now: float, **kwargs) -> list[Action]:
        self.now = now
        try:
            method(self, *args, **kwargs)
        except BaseException:
            self._out, self._broadcast, self._persist = [], False, False
            raise
        return self._drain()
    return run


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
        self.dead: dict[str, float] = {}  # container -> when we heard it died
        self.space_asked: dict[Range, float] = {}  # range -> when we last asked a donor for it
        self.paxos: Participant | None = Observer() if config.observer else Node(config.our_name, config.our_uid)
        self.quorum = config.quorum
        self.awaiting_consensus = self.shutting_down = False
        self.rng = random.Random(config.random_seed)
        self.now = 0.0
        self.next_tick: float | None = None
        self._out: list[Action] = []
        self._broadcast = self._persist = False

    # -- lifecycle ----------------------------------------------------------------

    def restore(self, snapshot: Mapping | None) -> bool:
        """Load persisted state (before start); False, and nothing loaded, if it was
        written for another peer name or range or is unusable, as Weave discards it."""
        loaded = load_snapshot(snapshot, self.our_name, self.universe)
        if loaded is None:
            return False
        self.ring, self.owned = loaded
        self.space.update_ranges(self.ring.owned_ranges())
        for cidr in self.owned.all_cidrs():
            if self.ring.contains(cidr.addr) and self.space.is_free(cidr.addr):
                self.space.claim(cidr.addr)
        return True

    @_input
    def start(self) -> None:
        """A persisted ring wins over a seed; a seed makes the ring at once."""
        self.next_tick = self.now + self.config.tick_interval
        if self.ring.empty() and self.config.seed:
            self.create_ring(self.config.seed)

    def snapshot(self) -> dict:
        """Plain-data persistence snapshot: peer name, range, ring, owned addresses."""
        return make_snapshot(self.our_name, self.universe, self.ring, self.owned)

    def take_delta(self) -> dict:
        """What a store that writes only changes needs now (persistence.make_delta):
        the snapshot's keys, with `owned` holding only the idents changed since the last
        delta. Taking it forgets those changes: call `delta_not_saved` if its write fails."""
        return make_delta(self.our_name, self.universe, self.ring, self.owned)

    def delta_not_saved(self, delta: dict) -> None:
        """The write of `delta` failed: its owned changes go with the next delta."""
        self.owned.changed(delta["owned"])

    def next_deadline(self) -> float | None:
        """When `tick` is next due; None once we have left (shutdown): nothing is due."""
        return None if self.shutting_down else self.next_tick

    @_input
    def tick(self) -> None:
        """Due every tick_interval: re-propose while awaiting consensus, else retry
        pending operations; free addresses of containers dead for long enough."""
        if self.next_tick is None or self.now < self.next_tick or self.shutting_down:
            return
        self.next_tick = self.now + self.config.tick_interval
        if self.awaiting_consensus:
            self.propose()
        else:
            self.try_pending_ops()
        for ident, died in list(self.dead.items()):
            if died < self.now - self.config.container_died_timeout:
                del self.dead[ident]
                self._free([c.addr for c in self.owned.remove_all(ident)])

    # -- requests -------------------------------------------------------------------

    @_input
    def allocate(self, request_id: Hashable, ident: str, subnet: str | CIDR | None = None,
                 is_container: bool = True) -> None:
        """An address for ident in subnet (default subnet if None); replies a CIDR."""
        cidr = self._parse(request_id, parse_subnet, self.config.default_subnet if subnet is None else subnet)
        if cidr is not None:
            self._do(Allocate(request_id, ident, cidr, is_container), self.pending_allocates)

    @_input
    def claim(self, request_id: Hashable, ident: str, cidr: str | CIDR, is_container: bool = True,
              no_error_on_unknown: bool = False) -> None:
        """Claim a specific address (`a.b.c.d/len`) for ident; replies None on success."""
        parsed = self._parse(request_id, parse_cidr, cidr)
        if parsed is not None:
            self._do(Claim(request_id, ident, parsed, is_container, no_error_on_unknown), self.pending_claims)

    @_input
    def prime(self, request_id: Hashable) -> None:
        """Reply once we have a ring, asking for an election if needed (GET /ring)."""
        self._do(Prime(request_id), self.pending_primes)

    def lookup(self, ident: str, subnet: str | CIDR | None = None) -> list[CIDR]:
        """Addresses ident holds in subnet (anywhere if None). A query: no actions.
        Raises RequestError for a malformed subnet."""
        try:
            r = Range(0, 1 << 32) if subnet is None else _cidr(parse_subnet, subnet).range()
        except AddressError as e:
            raise RequestError(str(e), code="bad_request", text=e.text) from e
        return self.owned.in_range(ident, r)

    @_input
    def release(self, request_id: Hashable, ident: str, addr: int | str) -> None:
        """Free one address (`a.b.c.d` or its number) held by ident."""
        addr = self._parse(request_id, parse_ip, addr) if isinstance(addr, str) else addr
        if addr is None:
            return
        if not self.owned.remove(ident, addr):
            self.reply(request_id, error=RequestError(f"Free: address {format_ip(addr)} not found for {ident}",
                                                      code="not_found"))
            return
        self._free([addr])
        self.reply(request_id)

    @_input
    def delete(self, request_id: Hashable, ident: str) -> None:
        """Free every address held by ident (its container went away)."""
        cidrs = self.owned.remove_all(ident)
        if not cidrs:
            self.reply(request_id, error=RequestError(f"Delete: no addresses for {ident}", code="not_found"))
            return
        self._free([c.addr for c in cidrs])
        self.dead.pop(ident, None)
        self.reply(request_id)

    @_input
    def cancel(self, request_id: Hashable) -> None:
        """The requester gave up: drop its pending operation, replying "cancelled"."""
        self._cancel(lambda op: op.request_id == request_id)

    @_input
    def container_died(self, ident: str) -> None:
        """Its addresses go container_died_timeout later, unless it asks again first."""
        if ident in self.owned:
            self.dead[ident] = self.now
        self._cancel(lambda op: op.ident == ident, (self.pending_allocates, self.pending_claims))

    @_input
    def rmpeer(self, request_id: Hashable, peer: str) -> None:
        """Take over every range of a dead peer (name or nickname); replies with the
        number of addresses gained."""
        name = lookup_peername(self.nicknames, peer)
        if name is None:
            self.reply(request_id, error=RequestError(f"unknown peer {peer!r}", code="unknown_peer"))
            return
        if name == self.our_name:
            self.reply(request_id, error=RequestError("cannot take over ranges from ourself", code="bad_request"))
            return
        before = self.space.num_free()
        if self.ring.transfer(name, self.our_name):
            self.ring_updated()
            self._broadcast = True
        self.reply(request_id, self.space.num_free() - before)

    @_input
    def shutdown(self) -> None:
        """Leave (weave reset): cancel pending requests, hand our ranges to an heir."""
        self.shutting_down = True
        self._cancel(lambda op: True)
        heir = pick_heir(self.ring, self.nicknames, self.our_name, self.is_known_peer)
        self.ring.transfer(self.our_name, heir)
        self.space.clear()
        if heir != UNKNOWN_PEER_NAME:
            self._persist = self._broadcast = True

    # -- peers --------------------------------------------------------------------------

    @_input
    def set_peers(self, known: Iterable[PeerName], nicknames: Mapping[PeerName, str] | None = None) -> None:
        """The peers the mesh knows now (reachable ones). Nicknames of peers gone from
        both mesh and ring are forgotten, as Weave's PeerGone does."""
        self.known_peers = {PeerName(p) for p in known}
        self.nicknames.update(nicknames or {})
        self.prune_nicknames()

    def set_quorum(self, quorum: int) -> None:
        """Used at the next election (Weave asks for the quorum when it starts one)."""
        self.quorum = quorum

    def is_known_peer(self, name: PeerName) -> bool:
        return name == self.our_name or name in self.known_peers

    # -- gossip -----------------------------------------------------------------------

    def gossip_state(self, now: float | None = None) -> IpamGossip:
        """Our current full state (a copy), as sent in gossip, broadcasts and relays."""
        state = IpamGossip(int(self.now if now is None else now), dict(self.nicknames))
        if self.ring.empty():
            state.paxos = self.paxos.gossip_state() if self.paxos else None
        else:
            state.ring = self.ring.copy()
        return state

    def gossip(self, now: float) -> bytes:
        """The payload for periodic gossip (or a relay): our current state, encoded."""
        return codec.encode_gossip(self.gossip_state(now))

    @_input
    def on_gossip(self, state: IpamGossip | bytes) -> None:
        """Periodic gossip from a neighbour: merged, never answered nor relayed."""
        gossip.update(self, UNKNOWN_PEER_NAME, _state(state))

    @_input
    def on_gossip_broadcast(self, sender: PeerName, state: IpamGossip | bytes) -> None:
        """A broadcast originated by sender. The shell relays `gossip(now)`."""
        gossip.update(self, PeerName(sender), _state(state))

    @_input
    def on_gossip_unicast(self, sender: PeerName, message: Unicast | bytes) -> None:
        """SpaceRequest, RingUpdate or SpaceRequestDenied from sender."""
        if isinstance(message, bytes):
            message = codec.decode_unicast(message)
        gossip.on_unicast(self, PeerName(sender), message)

    # -- operation support (allocate.py, claim.py) ---------------------------------------

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
        """False if dest is unreachable (in Weave, GossipUnicast fails: no route)."""
        if not self.is_known_peer(dest):
            return False
        self._out.append(SendUnicast(dest, SpaceRequest(r)))
        return True

    def send_ring_update(self, dest: PeerName) -> None:
        # Encoded now, as Weave does: before this input's free-space report.
        self._out.append(SendUnicast(dest, RingUpdate(self.gossip_state())))

    def send_space_request_denied(self, dest: PeerName, r: Range) -> None:
        self._out.append(SendUnicast(dest, SpaceRequestDenied(r)))

    def must_broadcast(self) -> None:
        self._broadcast = True

    def must_persist(self) -> None:
        self._persist = True

    def ask_for_space(self, r: Range) -> None:
        """Ask one donor for space in r; not again until a donor answers or a tick has
        passed (else each pending allocation asks, and the donor halves its space for each)."""
        if self.now - self.space_asked.get(r, float("-inf")) < self.config.tick_interval:
            return
        for donor in self.ring.choose_peers_to_ask_for_space(r.start, r.end, self.rng):
            if self.send_space_request(donor, r):
                self.space_asked[r] = self.now
                return

    def try_pending_ops(self) -> None:
        # Primes first, claims before allocations: claimed addresses must not be handed out.
        for ops in (self.pending_primes, self.pending_claims, self.pending_allocates):
            ops[:] = [op for op in list(ops) if not op.try_(self)]

    # -- internals ------------------------------------------------------------------------

    def _parse(self, request_id: Hashable, parse, value):
        """parse(value), or None after replying bad_request."""
        try:
            return parse(value) if isinstance(value, str) else _cidr(parse, value)
        except AddressError as e:
            self.reply(request_id, error=RequestError(str(e), code="bad_request", text=e.text))
            return None

    def _do(self, op, queue: list) -> None:
        if self.shutting_down:
            op.cancel(self)
        elif not op.try_(self):
            queue.append(op)

    def _cancel(self, which, queues=None) -> None:
        for ops in queues or (self.pending_primes, self.pending_claims, self.pending_allocates):
            for op in [op for op in ops if which(op)]:
                ops.remove(op)
                op.cancel(self)

    def _free(self, addrs: list[int]) -> None:
        for addr in addrs:
            if self.ring.contains(addr) and not self.space.is_free(addr):
                self.space.release(addr)
        self._persist = True

    def prune_nicknames(self) -> None:
        ring_peers = self.ring.peer_names()
        for name in [n for n in self.nicknames if n not in ring_peers and not self.is_known_peer(n)]:
            del self.nicknames[name]

    def assert_invariants(self) -> None:
        """The ring's view of what we own and our space hold the same addresses."""
        self.ring.assert_invariants()
        self.space.assert_invariants()
        if self.space.owned_ranges() != coalesce(self.ring.owned_ranges()):
            raise LocalProtocolError(f"ring and space disagree: {self.ring.owned_ranges()} vs {self.space!r}")

    def _drain(self) -> list[Action]:
        if not self.shutting_down:
            free = {token: sum(self.space.num_free_in_range(r) for r in ranges)
                    for token, ranges in self.ring.entry_ranges(self.our_name).items()}
            if free:
                self.ring.report_free(free)
            self.assert_invariants()
        actions = list(self._out)
        if self._broadcast:  # IPAM gossip data is always the latest state: send one
            actions.append(Broadcast(self.gossip_state()))
        if self._persist:
            actions.append(Persist())
        self._out, self._broadcast, self._persist = [], False, False
        return actions


def _cidr(parse, value: str | CIDR) -> CIDR:
    return parse(value if isinstance(value, str) else str(value))


def _state(state: IpamGossip | bytes) -> IpamGossip:
    return codec.decode_gossip(state) if isinstance(state, bytes) else state
