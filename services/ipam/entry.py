"""Ring entries and Weave's entry-list merge (weave:ipam/ring/entry.go, ring.go).

An entry says "from Token up to the next entry's Token, the range belongs to Peer".
`Version` orders competing claims on one token; `Free` is the owner's latest report of
unallocated addresses in the range (a hint for choosing whom to ask for space).

`merge_entries` is Weave's merge rule table, seen from the receiving peer `us`
(mine = our entry, theirs = incoming entry, same token unless stated):

| case                                         | result                                   |
|----------------------------------------------|------------------------------------------|
| token only in theirs, splits a range we own  | refused if we have allocations in the    |
|   (owned by someone else)                    |   split part; else accepted              |
| token only in theirs, after our last token,  | refused (errEntryInMyRange)              |
|   our last range is ours, theirs not ours    |                                          |
| token only in mine / only in theirs          | kept / accepted                          |
| mine.version > theirs.version                | mine                                     |
| equal version, equal (token, peer)           | mine                                     |
| equal version, different peer                | refused if mine is ours with allocations;|
|                                              |   else higher Free wins (ties: higher    |
|                                              |   peer name, so every peer agrees)       |
| theirs newer, mine not ours                  | theirs                                   |
| theirs newer, mine ours, theirs names us     | mine, re-imposed with theirs.version + 1 |
| theirs newer, mine ours, gives it away       | theirs if we have no allocations there,  |
|                                              |   else refused (errNewerVersion)         |

One refinement over Go: Go only checks a split when the range being split is one
we own and was seen earlier in the same walk; a split of our range that wraps around
the end of the ring (before our first token) is checked here too, with the same rule.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from shared.weave.peer_name import PeerName
from services.ipam.address import Range, format_ip
from services.ipam.errors import RingError

HasAllocations = Callable[[list[Range]], bool]
MakeRanges = Callable[[int, int], list[Range]]


@dataclass
class RingEntry:
    token: int
    peer: PeerName
    version: int = 0
    free: int = 0

    def same_claim(self, other: "RingEntry") -> bool:
        """Weave's entry.Equal: Free is a hint and does not take part."""
        return (self.token, self.peer, self.version) == (other.token, other.peer, other.version)

    def update(self, peer: PeerName, free: int) -> None:
        self.peer = PeerName(peer)
        self.version += 1
        self.free = free

    def copy(self) -> "RingEntry":
        return RingEntry(self.token, self.peer, self.version, self.free)


def in_my_range(theirs: RingEntry) -> RingError:
    return RingError(
        f"Peer {theirs.peer} says it owns the IP range from {format_ip(theirs.token)}, which I think I own",
        code="entry_in_my_range", token=theirs.token, peer=theirs.peer)


def inconsistent(mine: RingEntry, theirs: RingEntry) -> RingError:
    return RingError(
        f"Inconsistent entries for {format_ip(mine.token)}: owned by {mine.peer} "
        f"but incoming message says {theirs.peer}",
        code="inconsistent_entry", token=mine.token, peer=theirs.peer)


def newer_version(mine: RingEntry, theirs: RingEntry) -> RingError:
    return RingError(
        f"Received update for IP range I own at {format_ip(mine.token)} v{mine.version}: "
        f"incoming message says owner {theirs.peer} v{theirs.version}",
        code="newer_version", token=mine.token, peer=theirs.peer)


class _Merge:
    """One walk over two sorted entry lists; see the module table."""

    def __init__(self, mine: Sequence[RingEntry], theirs: Sequence[RingEntry], us: PeerName,
                 make_ranges: MakeRanges, has_allocations: HasAllocations) -> None:
        self.mine, self.theirs, self.us = mine, theirs, us
        self.make_ranges, self.has_allocations = make_ranges, has_allocations
        self.result: list[RingEntry] = []
        self.updated = False
        # Owner of the range a new token would split; at the start that is the owner
        # of our last range, which wraps round to our first token.
        self.previous_owner: PeerName | None = mine[-1].peer if mine else None

    def run(self) -> tuple[list[RingEntry], bool]:
        i = j = 0
        while i < len(self.mine) and j < len(self.theirs):
            mine, theirs = self.mine[i], self.theirs[j]
            if mine.token < theirs.token:
                self._keep(mine)
                i += 1
            elif mine.token > theirs.token:
                self._check_split(theirs, mine.token)
                self._take(theirs)
                j += 1
            else:
                self._same_token(mine, theirs, self._next_mine(i))
                i += 1
                j += 1
        for mine in self.mine[i:]:
            self._keep(mine)
        for theirs in self.theirs[j:]:
            if self.previous_owner == self.us and theirs.peer != self.us:
                raise in_my_range(theirs)
            self._take(theirs)
        return self.result, self.updated

    def _next_mine(self, i: int) -> int:
        return self.mine[(i + 1) % len(self.mine)].token

    def _keep(self, mine: RingEntry) -> None:
        self.result.append(mine.copy())
        self.previous_owner = mine.peer

    def _take(self, theirs: RingEntry) -> None:
        self.result.append(theirs.copy())
        self.updated = True
        self.previous_owner = None

    def _allocated(self, start: int, end: int) -> bool:
        return self.has_allocations(self.make_ranges(start, end))

    def _check_split(self, theirs: RingEntry, next_token: int) -> None:
        if self.previous_owner == self.us and theirs.peer != self.us:
            if self._allocated(theirs.token, next_token):
                raise in_my_range(theirs)

    def _same_token(self, mine: RingEntry, theirs: RingEntry, next_token: int) -> None:
        if mine.version > theirs.version or mine.same_claim(theirs):
            self._keep(mine)
        elif mine.version == theirs.version:
            self._tie(mine, theirs, next_token)
        elif mine.peer != self.us:
            self._take(theirs)
        elif theirs.peer == self.us:
            reimposed = mine.copy()
            reimposed.version = theirs.version + 1
            self._keep(reimposed)
            self.updated = True
        elif not self._allocated(mine.token, next_token):
            self._take(theirs)
        else:
            raise newer_version(mine, theirs)

    def _tie(self, mine: RingEntry, theirs: RingEntry, next_token: int) -> None:
        if mine.peer == self.us and self._allocated(theirs.token, next_token):
            raise inconsistent(mine, theirs)
        if (mine.free, mine.peer) >= (theirs.free, theirs.peer):
            self._keep(mine)
        else:
            self._take(theirs)


def merge_entries(mine: Sequence[RingEntry], theirs: Sequence[RingEntry], us: PeerName,
                  make_ranges: MakeRanges, has_allocations: HasAllocations) -> tuple[list[RingEntry], bool]:
    """Merge sorted `theirs` into sorted `mine` as peer `us` sees it.

    Returns fresh entries (inputs are not modified) and whether anything changed.
    Raises `RingError` when the merge would take away a range in which we hold
    allocations; in that case nothing has changed.
    """
    return _Merge(mine, theirs, us, make_ranges, has_allocations).run()
