"""The store kept across restarts of the dns process (not of the host's stack).

Why: only the origin peer may change its entries, and when gossip shows it an entry of
its own that it does not hold, it tombstones it (weave-spec §7). A dns process that
came back empty would therefore delete every name it had registered as soon as a peer
gossiped them back. So the shell writes the whole store to `<state-dir>/dns-entries.json`
after changes (coalesced) and at shutdown, and reads it back at start:

- our own entries are restored whenever the snapshot belongs to the same run of the
  host's stack (`incarnation`, which names the supervisor process). A new run starts
  empty, as Weave's weaver does after a restart: names of containers that are still
  attached come back from the datapath, and every stale name of ours that peers still
  hold is tombstoned by the rule above;
- other peers' entries are restored only from a snapshot younger than the gossip window
  (15 min): any deletion made since then still has a live tombstone somewhere (they
  last 30 min), which the next gossip brings. Older ones are left to gossip to re-teach.

Pure functions over bytes; the shell does the file I/O.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from services.dns.entry import GOSSIP_WINDOW_S, Entry
from services.gossip.peer_name import PeerName
from shared.errors import LocalProtocolError, WeaveError

FILE_NAME = "dns-entries.json"
FORMAT = 1


@dataclass(frozen=True)
class Snapshot:
    incarnation: str
    """Which run of the host's stack wrote it (see `incarnation_of` in the shell)."""
    saved_at: float
    """Unix seconds."""
    entries: tuple[Entry, ...]


def dumps(snap: Snapshot) -> bytes:
    rows = [[e.hostname, str(e.origin), e.container_id, e.addr, e.version, e.tombstone] for e in snap.entries]
    return json.dumps({"format": FORMAT, "incarnation": snap.incarnation, "saved_at": snap.saved_at,
                       "entries": rows}, separators=(",", ":")).encode()


def loads(data: bytes) -> Snapshot:
    """Parse a snapshot; LocalProtocolError if the file is not one we wrote."""
    try:
        raw = json.loads(data)
        if raw.get("format") != FORMAT:
            raise ValueError(f"format {raw.get('format')!r}")
        entries = tuple(Entry(container_id=str(c), origin=PeerName.parse(o), addr=int(a), hostname=str(h),
                              version=int(v), tombstone=int(t))
                        for h, o, c, a, v, t in raw["entries"])
        return Snapshot(str(raw["incarnation"]), float(raw["saved_at"]), entries)
    except (ValueError, TypeError, KeyError, AttributeError, WeaveError) as exc:
        raise LocalProtocolError(f"unreadable dns snapshot: {exc}", code="bad_snapshot") from None


def restorable(snap: Snapshot, *, our_name: PeerName, incarnation: str, now: float,
               fresh_for_s: float = GOSSIP_WINDOW_S) -> tuple[Entry, ...]:
    """The entries to load back, by the rules in the module docstring. `fresh_for_s`:
    half the tombstone timeout (the gossip window, 15 min, with Weave's 30 min)."""
    same_run = snap.incarnation == incarnation
    fresh = 0 <= now - snap.saved_at < fresh_for_s
    return tuple(e for e in snap.entries
                 if (same_run if e.origin == our_name else (same_run and fresh)))
