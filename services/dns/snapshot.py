"""What the dns process keeps on disk, so that what it acknowledged survives its crash.

Why it matters: only the origin peer may change its entries, and when gossip shows it
an entry of its own that it does not hold, it tombstones it (weave-spec §7). A dns
process that came back without an entry it had acknowledged would therefore delete it
on every host as soon as a peer gossiped it back: one crash, a cluster-wide delete.

Two files in the state dir (the shell does the I/O through `shared.durable`):
- `dns-journal.jsonl`: one record per local change (an add, a tombstone, a container
  bound to or released from its names), appended and fsynced BEFORE the change is
  acknowledged (bus reply, HTTP 204) or broadcast. Records carry a sequence number.
- `dns-entries.json`: the whole store (every peer's entries) and the containers whose
  names we hold, written atomically now and then (coalesced). It names the last journal
  record it includes (`journal_seq`); the journal is emptied right after it is written.
  Records at or below `journal_seq` are skipped when replayed, so a crash between the
  two writes neither loses nor replays anything twice.

What is restored at start (`restore`), before the process takes part in gossip:
- our own entries, from the snapshot and the journal after it, whenever they belong to
  the same run of the host's stack (`incarnation`, which names the supervisor
  process). A new run starts empty, as Weave's weaver does after a restart: names of
  containers still attached come back from the datapath, and every stale name of ours
  that peers still hold is tombstoned by the rule above;
- other peers' entries only from a snapshot of the same run younger than the gossip
  window (15 min): any deletion made since has a live tombstone somewhere (they last
  30 min), which the next gossip brings. Older ones are left to gossip to re-teach.

Bound containers: the ids whose names we hold because the container was attached
(a datapath event, or an add checked alive). A detach that the dns process missed
while it was down is caught at start: a bound container the datapath no longer has
gets its names tombstoned, so a crash never resurrects a deleted name either.

Pure functions over bytes and records.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Iterator

from services.dns.entry import GOSSIP_WINDOW_S, DnsEntry, merge_entry
from shared.weave.peer_name import PeerName
from shared.errors import LocalProtocolError, WeaveError

FILE_NAME = "dns-entries.json"
JOURNAL_NAME = "dns-journal.jsonl"
FORMAT = 2
READABLE_FORMATS = (1, 2)


@dataclass(frozen=True)
class Snapshot:
    incarnation: str
    """Which run of the host's stack wrote it (see `incarnation_of` in the shell)."""
    saved_at: float
    """Unix seconds."""
    entries: tuple[DnsEntry, ...]
    journal_seq: int = 0
    """The last journal record whose change this snapshot includes."""
    bound: frozenset[str] = frozenset()
    """Containers whose names we hold because they were attached."""


@dataclass(frozen=True)
class Record:
    """One journal record: a local change, durable before it is acknowledged."""
    seq: int
    incarnation: str
    entries: tuple[DnsEntry, ...] = ()
    """Our entries as the change left them (added, revived or tombstoned)."""
    bind: tuple[str, ...] = ()
    unbind: tuple[str, ...] = ()


@dataclass
class Restored:
    entries: list[DnsEntry] = field(default_factory=list)
    bound: set[str] = field(default_factory=set)
    last_seq: int = 0
    """The highest sequence number seen: the next record must use a higher one."""


def _row(e: DnsEntry) -> list:
    return [e.hostname, str(e.origin), e.container_id, e.addr, e.version, e.tombstone]


def _entry(row) -> DnsEntry:
    h, o, c, a, v, t = row
    return DnsEntry(container_id=str(c), origin=PeerName.parse(o), addr=int(a), hostname=str(h),
                 version=int(v), tombstone=int(t))


def dumps(snap: Snapshot) -> bytes:
    return b"".join(dump_chunks(snap))


ROWS_PER_CHUNK = 64
_COMPACT = json.JSONEncoder(separators=(",", ":")).encode


def dump_chunks(snap: Snapshot) -> Iterator[bytes]:
    """The snapshot's JSON in pieces of ROWS_PER_CHUNK entries, for writing as it is
    made. The store is written about once a second while it changes, and tombstones
    make it grow for 30 minutes: a whole document built at once (a list per entry, then
    one string) raised the process's high-water mark with every entry, ~1.3 KB an
    entry in memory that stayed resident (issue 15's soak); in pieces it stays flat."""
    head = _COMPACT({"format": FORMAT, "incarnation": snap.incarnation, "saved_at": snap.saved_at,
                     "journal_seq": snap.journal_seq, "bound": sorted(snap.bound)})
    yield (head[:-1] + ',"entries":[').encode()
    origins: dict[PeerName, str] = {}
    rows: list[str] = []
    sep = ""
    for e in snap.entries:
        origin = origins.get(e.origin)
        if origin is None:
            origin = origins[e.origin] = str(e.origin)
        rows.append(_COMPACT([e.hostname, origin, e.container_id, e.addr, e.version, e.tombstone]))
        if len(rows) == ROWS_PER_CHUNK:
            yield (sep + ",".join(rows)).encode()
            rows.clear()
            sep = ","
    if rows:
        yield (sep + ",".join(rows)).encode()
    yield b"]}"


def loads(data: bytes) -> Snapshot:
    """Parse a snapshot; LocalProtocolError if the file is not one we wrote."""
    try:
        raw = json.loads(data)
        if raw.get("format") not in READABLE_FORMATS:
            raise ValueError(f"format {raw.get('format')!r}")
        entries = tuple(_entry(r) for r in raw["entries"])
        return Snapshot(str(raw["incarnation"]), float(raw["saved_at"]), entries,
                        int(raw.get("journal_seq", 0)), frozenset(map(str, raw.get("bound", ()))))
    except (ValueError, TypeError, KeyError, AttributeError, WeaveError) as exc:
        raise LocalProtocolError(f"unreadable dns snapshot: {exc}", code="bad_snapshot") from None


def record_json(rec: Record) -> dict:
    out: dict = {"seq": rec.seq, "inc": rec.incarnation}
    if rec.entries:
        out["e"] = [_row(e) for e in rec.entries]
    if rec.bind:
        out["bind"] = list(rec.bind)
    if rec.unbind:
        out["unbind"] = list(rec.unbind)
    return out


def record_of(raw) -> Record:
    """LocalProtocolError if `raw` is not a record we wrote."""
    try:
        return Record(int(raw["seq"]), str(raw["inc"]), tuple(_entry(r) for r in raw.get("e", ())),
                      tuple(map(str, raw.get("bind", ()))), tuple(map(str, raw.get("unbind", ()))))
    except (ValueError, TypeError, KeyError, AttributeError, WeaveError) as exc:
        raise LocalProtocolError(f"unreadable dns journal record: {exc}", code="bad_journal") from None


def restorable(snap: Snapshot, *, our_name: PeerName, incarnation: str, now: float,
               fresh_for_s: float = GOSSIP_WINDOW_S) -> tuple[DnsEntry, ...]:
    """The snapshot's entries to load back, by the rules in the module docstring.
    `fresh_for_s`: half the tombstone timeout (the gossip window, 15 min, with Weave's 30 min)."""
    same_run = snap.incarnation == incarnation
    fresh = 0 <= now - snap.saved_at < fresh_for_s
    return tuple(e for e in snap.entries
                 if (same_run if e.origin == our_name else (same_run and fresh)))


def restore(snap: Snapshot | None, records: list, *, our_name: PeerName, incarnation: str, now: float,
            fresh_for_s: float = GOSSIP_WINDOW_S) -> Restored:
    """What to load at start: the snapshot's restorable entries, then every journal
    record after it (of this run; only our own entries), merged by version. Records
    that do not parse end the replay (they were never acknowledged: see Journal.read)."""
    out = Restored()
    by_key: dict = {}
    after = 0
    if snap is not None:
        after = out.last_seq = snap.journal_seq
        if snap.incarnation == incarnation:
            out.bound = set(snap.bound)
        for e in restorable(snap, our_name=our_name, incarnation=incarnation, now=now, fresh_for_s=fresh_for_s):
            by_key[e.key] = e
    for raw in records:
        try:
            rec = record_of(raw)
        except LocalProtocolError:
            break
        out.last_seq = max(out.last_seq, rec.seq)
        if rec.seq <= after or rec.incarnation != incarnation:
            continue
        for e in rec.entries:
            if e.origin == our_name:
                old = by_key.get(e.key)
                by_key[e.key] = e if old is None else merge_entry(old, e)
        out.bound |= set(rec.bind)
        out.bound -= set(rec.unbind)
    out.entries = list(by_key.values())
    return out
