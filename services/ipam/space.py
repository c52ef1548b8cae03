"""One peer's address space: what it owns and what is free (weave:ipam/space/space.go).

Two sets of addresses, each kept as a sorted list of boundaries: even positions are
inclusive starts, odd positions exclusive ends, neighbours always coalesced. `ours`
holds allocated addresses, `free` the unallocated rest of the ranges the ring gives us.
Together they are exactly the ranges we own (the allocator asserts this).
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import Iterator

from services.ipam.address import Range, format_ip
from shared.errors import LocalProtocolError


def _contains(bounds: list[int], addr: int) -> bool:
    return bisect_right(bounds, addr) % 2 == 1


def _add_sub(bounds: list[int], start: int, end: int, sense: int) -> list[int]:
    """Union (sense 0) or difference (sense 1) of the set with [start, end)."""
    start_pos = bisect_left(bounds, start)
    end_pos = bisect_right(bounds, end, lo=start_pos)
    res = bounds[:start_pos]
    if start_pos % 2 == sense:
        res.append(start)
    if end_pos % 2 == sense:
        res.append(end)
    return res + bounds[end_pos:]


def _add(bounds: list[int], start: int, end: int) -> list[int]:
    return _add_sub(bounds, start, end, 0)


def _subtract(bounds: list[int], start: int, end: int) -> list[int]:
    return _add_sub(bounds, start, end, 1)


def _chunks(bounds: list[int]) -> Iterator[Range]:
    for i in range(0, len(bounds), 2):
        yield Range(bounds[i], bounds[i + 1])


def coalesce(ranges: list[Range]) -> list[Range]:
    """The same addresses as sorted, merged ranges."""
    bounds: list[int] = []
    for r in ranges:
        bounds = _add(bounds, r.start, r.end)
    return list(_chunks(bounds))


class Space:
    def __init__(self) -> None:
        self.ours: list[int] = []
        self.free: list[int] = []

    def clear(self) -> None:
        self.ours, self.free = [], []

    def add(self, start: int, size: int) -> None:
        self.free = _add(self.free, start, start + size)

    def add_ranges(self, ranges: list[Range]) -> None:
        for r in ranges:
            self.free = _add(self.free, r.start, r.end)

    def update_ranges(self, ranges: list[Range]) -> None:
        """Make `ranges` exactly the space we own: new space becomes free, space no
        longer ours is dropped. Allocated addresses must stay inside `ranges` (the
        ring merge refuses to give them away), else this is a bug here."""
        wanted: list[int] = []
        for r in ranges:
            wanted = _add(wanted, r.start, r.end)
        outside = list(self.ours)
        for chunk in _chunks(wanted):
            outside = _subtract(outside, chunk.start, chunk.end)
        if outside:
            raise LocalProtocolError(f"allocated addresses outside our ranges: {outside}")
        free = wanted
        for chunk in _chunks(self.ours):
            free = _subtract(free, chunk.start, chunk.end)
        self.free = free

    def _walk_free(self, r: Range) -> Iterator[Range]:
        """Free chunks clipped to r, in address order."""
        if r.start >= r.end:
            return
        for chunk in _chunks(self.free):
            if chunk.end <= r.start:
                continue
            if chunk.start >= r.end:
                return
            yield Range(max(chunk.start, r.start), min(chunk.end, r.end))

    def allocate(self, r: Range) -> int | None:
        """Take the lowest free address in r; None if there is none."""
        for chunk in self._walk_free(r):
            self._take(chunk.start)
            return chunk.start
        return None

    def _take(self, addr: int) -> None:
        self.ours = _add(self.ours, addr, addr + 1)
        self.free = _subtract(self.free, addr, addr + 1)

    def claim(self, addr: int) -> None:
        if not _contains(self.free, addr):
            raise LocalProtocolError(f"Address {format_ip(addr)} is not free to claim")
        self._take(addr)

    def release(self, addr: int) -> None:
        """Weave's Space.Free: the address goes back to the free set."""
        if not _contains(self.ours, addr):
            raise LocalProtocolError(f"Address {format_ip(addr)} is not ours")
        self.ours = _subtract(self.ours, addr, addr + 1)
        self.free = _add(self.free, addr, addr + 1)

    def is_free(self, addr: int) -> bool:
        return _contains(self.free, addr)

    def num_owned(self) -> int:
        return sum(c.size for c in _chunks(self.ours))

    def num_free(self) -> int:
        return sum(c.size for c in _chunks(self.free))

    def num_free_in_range(self, r: Range) -> int:
        return sum(c.size for c in self._walk_free(r))

    def has_allocations(self, ranges: list[Range]) -> bool:
        """Is any address in `ranges` allocated (in `ours`)?"""
        return any(c.overlaps(r) for r in ranges for c in _chunks(self.ours))

    def biggest_free_range(self, r: Range) -> Range:
        biggest, size = Range(0, 0), 0
        for chunk in self._walk_free(r):
            if chunk.size >= size:
                candidate = chunk.biggest_cidr_range()
                if candidate.size >= size:
                    biggest, size = candidate, candidate.size
        return biggest

    def donate(self, r: Range) -> Range | None:
        """Give away a CIDR-aligned free chunk of r: the biggest, but no more than half
        the free space in r (its upper half, rounded up, so never empty). None if r has
        no free space."""
        biggest = self.biggest_free_range(r)
        if biggest.size == 0:
            return None
        if biggest.size > self.num_free_in_range(r) // 2:
            biggest = Range(biggest.start + biggest.size // 2, biggest.end)
        self.ours = _subtract(self.ours, biggest.start, biggest.end)
        self.free = _subtract(self.free, biggest.start, biggest.end)
        return biggest

    def everything(self) -> list[int]:
        """Boundaries of all space we own, allocated or free."""
        bounds = list(self.ours)
        for chunk in _chunks(self.free):
            bounds = _add(bounds, chunk.start, chunk.end)
        return bounds

    def owned_ranges(self) -> list[Range]:
        return list(_chunks(self.everything()))

    def assert_invariants(self) -> None:
        for name, bounds in (("ours", self.ours), ("free", self.free)):
            if any(a >= b for a, b in zip(bounds, bounds[1:])) or len(bounds) % 2:
                raise LocalProtocolError(f"space {name} boundaries broken: {bounds}")
        for chunk in _chunks(self.ours):
            if any(c.overlaps(chunk) for c in _chunks(self.free)):
                raise LocalProtocolError("an address is both allocated and free")

    def __repr__(self) -> str:
        owned = " ".join(f"{format_ip(c.start)}+{c.size}" for c in _chunks(self.ours))
        free = " ".join(f"{format_ip(c.start)}+{c.size}" for c in _chunks(self.free))
        return f"Space(owned: {owned or '-'}; free: {free or '-'})"
