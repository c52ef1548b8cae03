"""The IPAM ring CRDT (weave:ipam/ring/ring.go).

The ring divides the universe [start, end) among peers. Entries are sorted by token;
each owns [token, next token), and the last one wraps round to the first. Every peer
holds a copy; `peer` is whose copy this is, which matters to `merge`: a peer
refuses changes that would take away addresses it has handed out (see entry.py).

Invariants (`check_entries`): tokens sorted, unique, inside [start, end); no entry
reports more free addresses than its range holds.

Why `merge` returns a bool and not a delta (STYLE.md rule 4): Weave's ring merge is
relative to the receiving peer (it checks our own allocations), and IPAM gossip always
carries the full current ring, so "did anything change" is all the caller needs.
"""
from __future__ import annotations

import random
from bisect import bisect_left, bisect_right
from typing import Callable, Iterable, Sequence

from shared.weave.peer_name import UNKNOWN_PEER_NAME, PeerName
from services.ipam.address import Range
from services.ipam.entry import RingEntry, HasAllocations, merge_entries
from services.ipam.errors import DifferentRangeError, DifferentSeedsError, InvalidRingError
from shared.errors import LocalProtocolError

TRANSFER_VERSION_BUMP = 100  # rmpeer/shutdown: beats any concurrent +1 bumps on the same entry


def normalize_peers(peers: Iterable[int]) -> list[PeerName]:
    """Sorted and de-duplicated, as Weave normalises a consensus or seed list."""
    return [PeerName(p) for p in sorted(set(int(p) for p in peers))]


def _no_allocations(_ranges: list[Range]) -> bool:
    return False


class Ring:
    def __init__(self, start: int, end: int, peer: PeerName,
                 entries: Sequence[RingEntry] = (), seeds: Sequence[int] = ()) -> None:
        if not start < end:
            raise LocalProtocolError(f"ring needs start < end, got {start}..{end}")
        self.start, self.end, self.peer = start, end, PeerName(peer)
        self.entries: list[RingEntry] = [e.copy() for e in entries]
        self.seeds: list[PeerName] = [PeerName(s) for s in seeds]

    # -- basics -------------------------------------------------------------

    @property
    def range(self) -> Range:
        return Range(self.start, self.end)

    def empty(self) -> bool:
        return not self.entries

    def copy(self, peer: PeerName | None = None) -> "Ring":
        return Ring(self.start, self.end, self.peer if peer is None else peer, self.entries, self.seeds)

    def contains(self, addr: int) -> bool:
        return self.start <= addr < self.end

    def distance(self, start: int, end: int) -> int:
        """Addresses from start up to end, wrapping past the end of the ring."""
        if end > start:
            return end - start
        return (self.end - start) + (end - self.start)

    def _at(self, i: int) -> RingEntry:
        return self.entries[i % len(self.entries)]

    def _tokens(self) -> list[int]:
        return [e.token for e in self.entries]

    # -- invariants ---------------------------------------------------------

    def check_entries(self, entries: Sequence[RingEntry]) -> None:
        """Raise InvalidRingError if `entries` could not be this ring's entries."""
        for a, b in zip(entries, entries[1:]):
            if a.token > b.token:
                raise InvalidRingError("Ring not sorted", code="not_sorted")
            if a.token == b.token:
                raise InvalidRingError("Token appears twice in ring", code="token_repeated")
        if not entries:
            return
        if entries[0].token < self.start or entries[-1].token >= self.end:
            raise InvalidRingError("Token is out of range", code="token_out_of_range")
        for i, e in enumerate(entries):
            room = self.distance(e.token, entries[(i + 1) % len(entries)].token)
            if e.free > room:
                raise InvalidRingError(f"Entry {e.token} reporting too much free space: {e.free} > {room}",
                                       code="too_much_free")

    def assert_invariants(self) -> None:
        """Our own ring must always be valid; a failure here is a bug on this side."""
        try:
            self.check_entries(self.entries)
        except InvalidRingError as e:
            raise LocalProtocolError(f"ring invariant broken: {e.message}") from e

    # -- ranges -------------------------------------------------------------

    def make_ranges(self, start: int, end: int) -> list[Range]:
        """[start, end) on the ring as one or two plain ranges (split at the origin)."""
        return self._split_over_zero([Range(start, end)])

    def _split_over_zero(self, ranges: list[Range]) -> list[Range]:
        if not ranges:
            return ranges
        last = ranges[-1]
        if last.end == self.start:
            return ranges[:-1] + [Range(last.start, self.end)]
        if last.end <= last.start:
            return [Range(self.start, last.end)] + ranges[:-1] + [Range(last.start, self.end)]
        return ranges

    def owned_ranges(self, peer: PeerName | None = None) -> list[Range]:
        """Ranges owned by `peer` (default: us), sorted, split at the origin."""
        who = self.peer if peer is None else peer
        ranges = [Range(e.token, self._at(i + 1).token)
                  for i, e in enumerate(self.entries) if e.peer == who]
        return self._split_over_zero(ranges)

    def entry_ranges(self, peer: PeerName) -> dict[int, list[Range]]:
        """token -> the range(s) of each entry owned by peer (split at the origin)."""
        return {e.token: self.make_ranges(e.token, self._at(i + 1).token)
                for i, e in enumerate(self.entries) if e.peer == peer}

    def all_range_info(self) -> list[tuple[PeerName, Range, int]]:
        """(owner, range, version) for every entry, split at the origin (for status)."""
        return [(e.peer, r, e.version)
                for i, e in enumerate(self.entries)
                for r in self.make_ranges(e.token, self._at(i + 1).token)]

    def owner(self, addr: int) -> PeerName:
        if not self.contains(addr):
            raise LocalProtocolError(f"address {addr} outside ring {self.range}")
        if self.empty():
            return UNKNOWN_PEER_NAME
        return self._at(bisect_right(self._tokens(), addr) - 1).peer

    def peer_names(self) -> set[PeerName]:
        return {e.peer for e in self.entries}

    # -- changes made by us ---------------------------------------------------

    def claim_for_peers(self, peers: Iterable[int]) -> None:
        """Divide an empty ring among `peers` in CIDR-aligned halves (sorted, de-duplicated)."""
        if not self.empty():
            raise LocalProtocolError("claim_for_peers needs an empty ring")
        peers = normalize_peers(peers)
        if not peers:
            raise LocalProtocolError("claim_for_peers needs at least one peer")
        self._subdivide(self.start, self.end, peers)
        self.seeds = peers
        self.assert_invariants()

    def _subdivide(self, start: int, end: int, peers: list[PeerName]) -> None:
        share = end - start
        if share == 0:
            return
        if share == 1 or len(peers) == 1:
            self.entries.append(RingEntry(start, peers[0], 0, share))
            return
        mid = start + share // 2
        self._subdivide(start, mid, peers[:len(peers) // 2])
        self._subdivide(mid + share % 2, end, peers[len(peers) // 2:])

    def grant_range_to_host(self, start: int, end: int, peer: PeerName) -> None:
        """Give [start, end), which we own, to `peer`; inserts at most two tokens."""
        self._check_grant(start, end)
        pos = bisect_right(self._tokens(), start) - 1
        start_free = min(self.distance(start, self._at(pos + 1).token), self.distance(start, end))
        previous = self._at(pos)
        if previous.token == start:
            previous.update(peer, start_free)
        else:
            pos += 1
            self.entries.insert(pos, RingEntry(start, PeerName(peer), 0, start_free))
            previous.update(self.peer, self.distance(previous.token, start))
        pos += 1
        while pos < len(self.entries) and self.entries[pos].token < end:
            e = self.entries[pos]
            e.update(peer, min(e.free, self.distance(e.token, end)))
            pos += 1
        self._insert_end_token(self.start if end == self.end else end, pos)
        self.assert_invariants()

    def _check_grant(self, start: int, end: int) -> None:
        if not (start < end and self.start <= start and end <= self.end and self.entries):
            raise LocalProtocolError(f"cannot grant [{start}, {end}) in ring {self.range}")
        inner = [e for e in self.entries if start < e.token < end]
        if self.owner(start) != self.peer or any(e.peer != self.peer for e in inner):
            raise LocalProtocolError(f"cannot grant [{start}, {end}): not all ours")

    def _insert_end_token(self, end: int, pos: int) -> None:
        tokens = self._tokens()
        i = bisect_left(tokens, end)
        if i < len(tokens) and tokens[i] == end:
            return
        free = self.distance(end, self._at(pos).token)
        self.entries.insert(i, RingEntry(end, self.peer, 0, free))

    def report_free(self, freespace: dict[int, int]) -> bool:
        """Record free counts of our entries (token -> free); bump Version where changed."""
        updated = False
        by_token = {e.token: (i, e) for i, e in enumerate(self.entries)}
        for token, free in freespace.items():
            if token not in by_token:
                raise LocalProtocolError(f"free report for unknown token {token}")
            i, e = by_token[token]
            if e.peer != self.peer or free > self.distance(e.token, self._at(i + 1).token):
                raise LocalProtocolError(f"bad free report {free} for token {token}")
            if e.free != free:
                e.free, e.version, updated = free, e.version + 1, True
        return updated

    def transfer(self, from_peer: PeerName, to_peer: PeerName) -> list[Range]:
        """Hand every entry of `from_peer` to `to_peer` (Version += 100); the ranges moved."""
        moved = []
        for i, e in enumerate(self.entries):
            if e.peer == from_peer:
                e.peer, e.version = PeerName(to_peer), e.version + TRANSFER_VERSION_BUMP
                moved.append(Range(e.token, self._at(i + 1).token))
        return self._split_over_zero(moved)

    # -- merge --------------------------------------------------------------

    def merge(self, other: "Ring", has_allocations: HasAllocations = _no_allocations) -> bool:
        """Merge a ring received from another peer; True if ours changed.

        `has_allocations(ranges)` says whether we hold allocations in any of them.
        Raises a RingError (ours unchanged) for an invalid ring, different seeds or
        range, or an update that would take away addresses we have allocated.
        """
        self.assert_invariants()
        self.check_entries(other.entries)
        if other.seeds and self.seeds and other.seeds != self.seeds:
            raise DifferentSeedsError("Received ring was seeded differently from ours",
                                      received=list(other.seeds), ours=list(self.seeds))
        if (other.start, other.end) != (self.start, self.end):
            raise DifferentRangeError("Received range differs from ours",
                                      received=other.range, ours=self.range)
        result, updated = merge_entries(self.entries, other.entries, self.peer,
                                        self.make_ranges, has_allocations)
        self._clamp_our_free(result)
        try:
            self.check_entries(result)
        except InvalidRingError as e:
            raise InvalidRingError(f"Merge of incoming data causes: {e.message}", code=e.code) from e
        if not self.seeds and other.seeds:
            self.seeds = list(other.seeds)
        self.entries = result
        return updated

    def _clamp_our_free(self, entries: list[RingEntry]) -> None:
        # A range of ours that got split (with no allocations in the split part)
        # may report more free space than it now holds.
        for i, e in enumerate(entries):
            room = self.distance(e.token, entries[(i + 1) % len(entries)].token)
            if e.peer == self.peer and e.free > room:
                e.free = room

    # -- choosing peers -------------------------------------------------------

    def choose_peers_to_ask_for_space(self, start: int, end: int, rng: random.Random) -> list[PeerName]:
        """Other peers with free space in [start, end), weighted-random order by Free."""
        totals: dict[PeerName, int] = {}
        for i, e in enumerate(self.entries):
            if i + 1 < len(self.entries) and self.entries[i + 1].token - 1 < start:
                continue
            if e.token >= end:
                break
            if e.free == 0 or e.peer == self.peer:
                continue
            totals[e.peer] = totals.get(e.peer, 0) + e.free
        weighted = [(free * rng.random(), peer) for peer, free in sorted(totals.items())]
        return [peer for _, peer in sorted(weighted, key=lambda w: -w[0])]

    def pick_peer_for_transfer(self, is_valid: Callable[[PeerName], bool]) -> PeerName:
        for e in self.entries:
            if e.peer != self.peer and is_valid(e.peer):
                return e.peer
        return UNKNOWN_PEER_NAME

    # -- persistence ----------------------------------------------------------

    def to_dict(self) -> dict:
        return {"start": self.start, "end": self.end, "peer": int(self.peer),
                "entries": [[e.token, int(e.peer), e.version, e.free] for e in self.entries],
                "seeds": [int(s) for s in self.seeds]}

    @classmethod
    def from_dict(cls, d: dict) -> "Ring":
        entries = [RingEntry(t, PeerName(p), v, f) for t, p, v, f in d["entries"]]
        return cls(d["start"], d["end"], PeerName(d["peer"]), entries, d["seeds"])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ring) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        body = ", ".join(f"{e.token}->{e.peer}(v{e.version},f{e.free})" for e in self.entries)
        return f"Ring[{self.start},{self.end}) peer={self.peer} [{body}] seeds={self.seeds}"
