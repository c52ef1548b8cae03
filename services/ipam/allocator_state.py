"""What the allocator's operations (allocate.py, claim.py, gossip.py) read and call on
the allocator: the state they share and the actions they may take. `Allocator`
implements it; the operations depend on this Protocol, not on the Allocator class, so
the allocator can import them without an import circle."""
from __future__ import annotations

from typing import Hashable, Iterable, Protocol

from services.ipam.address import CIDR, Range
from services.ipam.errors import RequestError
from services.ipam.owned import Owned
from services.ipam.paxos import Participant
from services.ipam.ring import Ring
from services.ipam.space import Space
from shared.weave.peer_name import PeerName


class AllocatorState(Protocol):
    our_name: PeerName
    universe: CIDR
    ring: Ring
    space: Space
    owned: Owned
    nicknames: dict[PeerName, str]
    pending_claims: list
    """Claims waiting for the ring or for space (claim.Claim each)."""
    dead: dict[str, float]
    """Container -> when we heard it died."""
    space_asked: dict[Range, float]
    """Range -> when we last asked a donor for it."""
    paxos: Participant | None

    def reply(self, request_id: Hashable, result: object = None, error: RequestError | None = None) -> None: ...

    def add_owned(self, ident: str, cidr: CIDR, is_container: bool) -> None: ...

    def establish_ring(self) -> None: ...

    def create_ring(self, peers: Iterable[PeerName]) -> None: ...

    def ring_updated(self) -> None: ...

    def send_space_request(self, dest: PeerName, r: Range) -> bool: ...

    def send_ring_update(self, dest: PeerName) -> None: ...

    def send_space_request_denied(self, dest: PeerName, r: Range) -> None: ...

    def must_broadcast(self) -> None: ...

    def must_persist(self) -> None: ...

    def ask_for_space(self, r: Range) -> None: ...

    def prune_nicknames(self) -> None: ...
