"""Which peer each MAC address lives behind (weave:router/mac_cache.go), sans-I/O.

Rules, as weave:
- An entry maps a 6-byte MAC to a peer name and remembers when it was last seen.
- `add` (frames we captured locally): a new MAC is entered; a MAC already known at
  *another* peer is left alone and that peer is returned, so the caller drops the
  frame as looped (most likely a frame we injected ourselves coming back).
- `add_forced` (frames arriving from the overlay): the entry moves to the frame's
  source peer; the old peer is returned so the caller can invalidate flows.
- `last_seen` is refreshed at most once per MAX_AGE/10 (1 min): the common case (same
  MAC, same peer, seen recently) does no writes.
- `expire(now)` drops entries not seen for MAX_AGE (10 min); the shell calls it every
  `expiry_interval` (MAX_AGE/10). MAX_AGE is production's DatapathSettings.mac_expiry_s;
  a cache takes its own (`MacCache(max_age)`). `lookup` does not look at the age, as in weave: an entry lives
  until the next expiry pass.
- `delete_peer` purges every MAC of a peer; wired to peer garbage collection.
"""
from __future__ import annotations

from shared.config import DatapathSettings

MAX_AGE = DatapathSettings().mac_expiry_s
"""Seconds an unseen MAC stays known: longer than typical ARP cache lifetimes
(> 3/2 of Linux base_reachable_time) so live conversations never lose their entry."""
REFRESH_INTERVAL = MAX_AGE / 10
"""Seconds between last-seen refreshes of an entry (1 min)."""
EXPIRY_INTERVAL = MAX_AGE / 10
"""Seconds between expiry passes (weave runs one every MAX_AGE/10)."""

_UNCHANGED = (False, None)


class MacCache:
    """MAC (6 bytes) -> (peer name, last seen). Times are seconds from any clock."""

    def __init__(self, max_age: float = MAX_AGE) -> None:
        self.max_age = max_age
        self._refresh = max_age / 10
        self.expiry_interval = max_age / 10
        """Seconds between expiry passes (weave runs one every max_age/10)."""
        self._peer: dict[bytes, int] = {}
        self._seen: dict[bytes, float] = {}

    def __len__(self) -> int:
        return len(self._peer)

    def lookup(self, mac: bytes) -> int | None:
        """Peer the MAC was last learnt at, or None if unknown."""
        return self._peer.get(mac)

    def add(self, mac: bytes, peer: int, now: float) -> tuple[bool, int | None]:
        """Learn a MAC seen locally. Returns (is new, conflicting peer or None)."""
        return self._add(mac, peer, now, False)

    def add_forced(self, mac: bytes, peer: int, now: float) -> tuple[bool, int | None]:
        """Learn a MAC seen behind `peer`, moving it if needed. Returns (is new,
        previous peer if it moved else None)."""
        return self._add(mac, peer, now, True)

    def _add(self, mac: bytes, peer: int, now: float, force: bool) -> tuple[bool, int | None]:
        old = self._peer.get(mac)
        if old is None:
            self._peer[mac] = peer
            self._seen[mac] = now
            return True, None
        moved = None
        if old != peer:
            if not force:
                return False, old
            self._peer[mac] = peer
            moved = old
        if now > self._seen[mac] + self._refresh:
            self._seen[mac] = now
        return (False, moved) if moved is not None else _UNCHANGED

    def last_seen(self, mac: bytes) -> float | None:
        return self._seen.get(mac)

    def delete_peer(self, peer: int) -> bool:
        """Forget every MAC at `peer`; True if there was any."""
        macs = [mac for mac, p in self._peer.items() if p == peer]
        for mac in macs:
            del self._peer[mac]
            del self._seen[mac]
        return bool(macs)

    def expire(self, now: float) -> list[tuple[bytes, int]]:
        """Drop entries not seen for more than max_age; returns what was dropped."""
        cutoff = now - self.max_age
        gone = [(mac, self._peer[mac]) for mac, seen in self._seen.items() if seen < cutoff]
        for mac, _ in gone:
            del self._peer[mac]
            del self._seen[mac]
        return gone

    def entries(self) -> dict[bytes, tuple[int, float]]:
        """Snapshot for status: MAC -> (peer, last seen)."""
        return {mac: (p, self._seen[mac]) for mac, p in self._peer.items()}
