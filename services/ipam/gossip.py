"""What the allocator does with what peers tell it (weave:ipam/allocator.go `update`,
`OnGossipUnicast`, `donateSpace`).

Received gossipState, by what it carries:

| carries                 | our state      | we                                           |
|-------------------------|----------------|----------------------------------------------|
| a ring                  | any            | merge it (refused: RingError, no change)      |
| no ring                 | have a ring    | answer a named sender with a RingUpdate      |
| Paxos state (maybe {})  | no ring        | merge claims; think; broadcast if ours moved;|
|                         |                |   make the ring on consensus                 |
| neither (an observer)   | no ring        | an elector starts an election for it         |

Nicknames are merged in every case except a refused ring. Periodic gossip comes with
sender UNKNOWN_PEER_NAME and is never answered.

Unicasts: a SpaceRequest is served only once we have a ring (else they will ask again):
we donate part of our free space in the requested range, or deny; either way our ring
goes back, telling them where else to look. A RingUpdate or a denial is the answer to
our own request: we may ask again (allocator.ask_for_space keeps one in flight).
"""
from __future__ import annotations


from shared.weave.peer_name import UNKNOWN_PEER_NAME, PeerName
from services.ipam.address import Range
from services.ipam.claim import deny_claims
from services.ipam.errors import DifferentRangeError, DifferentSeedsError
from services.ipam.messages import IpamGossip, RingUpdate, SpaceRequest, SpaceRequestDenied, Unicast
from services.ipam.ring import Ring
from services.ipam.transfer import annotate
from shared.errors import LocalProtocolError
from services.ipam.allocator_state import AllocatorState



def update(alloc: AllocatorState, sender: PeerName, state: IpamGossip) -> None:
    """Merge received state. A refused ring raises RingError before any change."""
    updated = merge_ring(alloc, state.ring) if state.ring is not None else False
    alloc.nicknames.update(state.nicknames)
    if state.ring is not None:
        if updated:
            alloc.prune_nicknames()
            alloc.ring_updated()
    elif not alloc.ring.empty():
        if sender != UNKNOWN_PEER_NAME:
            alloc.send_ring_update(sender)
    elif state.paxos is not None:
        paxos_update(alloc, state)
    elif alloc.paxos is not None and alloc.paxos.is_elector() and sender != UNKNOWN_PEER_NAME:
        alloc.establish_ring()


def merge_ring(alloc: AllocatorState, ring: Ring) -> bool:
    """Merge, with Weave's messages for the two configuration errors."""
    try:
        return alloc.ring.merge(ring, alloc.space.has_allocations)
    except DifferentSeedsError as e:
        raise DifferentSeedsError(
            f"IP allocation was seeded by different peers (received: {annotate(alloc.nicknames, ring.seeds)}, "
            f"ours: {annotate(alloc.nicknames, alloc.ring.seeds)})", **e.attrs) from e
    except DifferentRangeError as e:
        raise DifferentRangeError(
            f"Incompatible IP allocation ranges (received: {ring.range.as_cidr_string()}, "
            f"ours: {alloc.ring.range.as_cidr_string()})", **e.attrs) from e


def paxos_update(alloc: AllocatorState, state: IpamGossip) -> None:
    if alloc.paxos is None or not alloc.paxos.update(state.paxos):
        return
    if alloc.paxos.think():
        alloc.must_broadcast()
    consensus = alloc.paxos.consensus()
    if consensus is not None:
        alloc.create_ring(consensus.value)


def on_unicast(alloc: AllocatorState, sender: PeerName, message: Unicast) -> None:
    if isinstance(message, SpaceRequest):
        if not alloc.ring.empty():
            donate_space(alloc, message.range, sender)
    elif isinstance(message, SpaceRequestDenied):
        alloc.space_asked.clear()  # a donor answered: we may ask again
        deny_claims(alloc, sender, message.range)
    elif isinstance(message, RingUpdate):
        alloc.space_asked.clear()
        update(alloc, sender, message.state)
    else:
        raise LocalProtocolError(f"not an IPAM unicast: {message!r}")


def donate_space(alloc: AllocatorState, r: Range, to: PeerName) -> None:
    chunk = alloc.space.donate(r)
    if chunk is None:
        alloc.send_space_request_denied(to, r)
    else:
        alloc.ring.grant_range_to_host(chunk.start, chunk.end, to)
        alloc.must_persist()
        alloc.must_broadcast()
    alloc.send_ring_update(to)
