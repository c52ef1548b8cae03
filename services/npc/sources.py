"""Policies and pods every host shares: a last-writer-wins map gossiped on POLICY_CHANNEL.

Keys and values (JSON):
    NetworkPolicy/<namespace>/<name>   the object as `weave policy apply` was given it
    Namespace/<name>                   likewise (its labels serve namespaceSelector)
    Pod/<peer>/<container_id>          {"cidrs": [...], "labels": {...}, "namespace": "..."}

Each entry has a version, the origin (peer that wrote that version) and a value (None:
a tombstone). Entries of one key are ordered by (version, origin, digest of the value),
a total order, and merge keeps the greatest: merge is a join, so it is idempotent,
commutative and associative whatever arrives twice, late or out of order, and it
returns only what was new (None if nothing), which is what the shell re-announces.

Writers: any host writes policies and namespaces (`weave policy apply|delete`), with
the next version of the key. A pod is written by the host its container runs on
(from the datapath's ContainerEvents); other hosts only tombstone the pods of a peer
the mesh has removed. A host is the authority on its own pods: when gossip brings an
entry of one of its pods that differs from what it knows (its state was lost, or a
peer tombstoned it while it was away), it writes its own view again, one version up.
"""
from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.errors import RemoteProtocolError
from shared.schemas.datapath import ContainerEvent
from shared.weave.peer_name import PeerName

POLICY = "NetworkPolicy"
NAMESPACE = "Namespace"
POD = "Pod"
KINDS = (POLICY, NAMESPACE, POD)
EXPOSE_ID = "weave:expose"  # the bridge's own addresses: not a pod
WIRE_FORMAT = 1  # first byte of a payload; the rest is zlib(JSON list of entries)
WIRE_PULL = 2    # a one-byte payload: "send me your whole store" (unicast, on restart)
PULL = bytes([WIRE_PULL])
MAX_ENTRIES_PER_MESSAGE = 400  # keeps one message well under nats' 1 MiB payload limit


@dataclass(frozen=True)
class StoreEntry:
    key: str
    version: int
    origin: str
    """The writer's peer name in its wire form (str of a PeerName): entries are JSON on
    the wire and on disk, and their order compares it as text."""
    value: Mapping[str, Any] | None  # None = tombstone
    digest: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.version < 1:
            raise ValueError(f"entry {self.key}: version {self.version} < 1")
        object.__setattr__(self, "digest", _digest(self.value))

    @property
    def tombstone(self) -> bool:
        return self.value is None

    @property
    def rank(self) -> tuple[int, str, str]:
        return (self.version, self.origin, self.digest)


def _digest(value: Mapping[str, Any] | None) -> str:
    if value is None:
        return ""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def policy_key(namespace: str, name: str) -> str:
    return f"{POLICY}/{namespace}/{name}"


def namespace_key(name: str) -> str:
    return f"{NAMESPACE}/{name}"


def pod_key(peer: PeerName | str, container_id: str) -> str:
    return f"{POD}/{peer}/{container_id}"


def split_key(key: str) -> tuple[str, str, str]:
    """(kind, namespace-or-peer, name); Namespace keys have '' in the middle.
    Raises RemoteProtocolError for a key of no known shape."""
    kind, _, rest = key.partition("/")
    if kind == NAMESPACE and rest and "/" not in rest:
        return kind, "", rest
    middle, _, name = rest.partition("/")
    if kind in (POLICY, POD) and middle and name and (kind == POD or "/" not in name):
        return kind, middle, name
    raise RemoteProtocolError(f"malformed policy-store key {key!r}", code="bad_gossip", key=key)


class PolicyStore:
    """The map itself. Plain data: no clock, no I/O."""

    def __init__(self) -> None:
        self.entries: dict[str, StoreEntry] = {}

    def merge(self, entries: Iterable[StoreEntry]) -> list[StoreEntry] | None:
        """Keep the greatest entry of each key; return the entries that won (None if none)."""
        new: dict[str, StoreEntry] = {}
        for entry in entries:
            held = self.entries.get(entry.key)
            if held is None or entry.rank > held.rank:
                self.entries[entry.key] = entry
                new[entry.key] = entry
            elif entry.rank == held.rank:
                assert entry == held, f"two values for {entry.key} at one rank"
        return list(new.values()) or None

    def write(self, key: str, value: Mapping[str, Any] | None, origin: str) -> StoreEntry | None:
        """A local write, one version above the current; None if it changes nothing."""
        held = self.entries.get(key)
        if held is None and value is None:
            return None
        if held is not None and held.value == value:
            return None
        entry = StoreEntry(key, (held.version if held else 0) + 1, origin, value)
        self.merge([entry])
        return entry

    def live(self, kind: str | None = None) -> list[StoreEntry]:
        return [e for k, e in self.entries.items() if not e.tombstone and (kind is None or k.startswith(kind + "/"))]


# ---- wire -----------------------------------------------------------------------

def encode(entries: Iterable[StoreEntry]) -> bytes:
    rows = [[e.key, e.version, e.origin, e.value] for e in entries]
    return bytes([WIRE_FORMAT]) + zlib.compress(json.dumps(rows, separators=(",", ":")).encode())


def encode_chunks(entries: Iterable[StoreEntry], per_message: int = MAX_ENTRIES_PER_MESSAGE) -> list[bytes]:
    """`entries` as one or more payloads (a full state can be large)."""
    items = list(entries)
    return [encode(items[i:i + per_message]) for i in range(0, len(items), per_message)]


def decode(payload: bytes) -> list[StoreEntry]:
    """Raises RemoteProtocolError (code "bad_gossip") on anything but our own encoding."""
    if not payload or payload[0] != WIRE_FORMAT:
        raise RemoteProtocolError("policy gossip of an unknown format", code="bad_gossip")
    try:
        rows = json.loads(zlib.decompress(payload[1:], bufsize=1 << 16))
    except (zlib.error, ValueError) as exc:
        raise RemoteProtocolError(f"undecodable policy gossip: {exc}", code="bad_gossip") from exc
    if not isinstance(rows, list):
        raise RemoteProtocolError("policy gossip is not a list", code="bad_gossip")
    return [_entry(row) for row in rows]


def _entry(row: Any) -> StoreEntry:
    ok = (isinstance(row, list) and len(row) == 4 and isinstance(row[0], str) and type(row[1]) is int
          and row[1] >= 1 and isinstance(row[2], str) and (row[3] is None or isinstance(row[3], dict)))
    if not ok:
        raise RemoteProtocolError(f"malformed policy gossip entry {str(row)[:80]}", code="bad_gossip")
    split_key(row[0])
    return StoreEntry(row[0], row[1], row[2], row[3])


# ---- the host's view -------------------------------------------------------------

def pod_value(event: ContainerEvent) -> dict[str, Any]:
    return {"cidrs": list(event.cidrs), "labels": dict(event.labels), "namespace": event.namespace}


class PolicySources:
    """The shared map plus this host's authority over its own pods.

    Every method returns the entries that changed (to gossip and to feed the compiler).
    `own_pods` (container id -> value) is what the datapath says is attached here; it
    is persisted with the map, so a restart does not forget pods the datapath will not
    announce again.
    """

    def __init__(self, ourself: PeerName) -> None:
        self.ourself = ourself
        self._origin = str(ourself)
        """How keys and entries name us (the MAC form, as on the wire)."""
        self.state = PolicyStore()
        self.own_pods: dict[str, dict[str, Any]] = {}

    # -- objects from `weave policy` --------------------------------------------------
    def put(self, key: str, value: Mapping[str, Any]) -> StoreEntry | None:
        return self.state.write(key, dict(value), self._origin)

    def delete(self, key: str) -> StoreEntry | None:
        """None if there is no live entry under `key`."""
        held = self.state.entries.get(key)
        if held is None or held.tombstone:
            return None
        return self.state.write(key, None, self._origin)

    # -- pods of this host ---------------------------------------------------------
    def container_event(self, event: ContainerEvent) -> list[StoreEntry]:
        if event.container_id == EXPOSE_ID:
            return []
        if event.kind == "detached" or not event.cidrs:
            self.own_pods.pop(event.container_id, None)
        else:
            self.own_pods[event.container_id] = pod_value(event)
        return self._assert_own([event.container_id])

    def container_snapshot(self, events: Iterable[ContainerEvent]) -> list[StoreEntry]:
        """The datapath's full list: containers not in it are gone."""
        self.own_pods = {e.container_id: pod_value(e) for e in events
                         if e.container_id != EXPOSE_ID and e.kind == "attached" and e.cidrs}
        prefix = pod_key(self._origin, "")
        held = [k[len(prefix):] for k in self.state.entries if k.startswith(prefix)]
        return self._assert_own([*held, *self.own_pods])

    def _assert_own(self, container_ids: Iterable[str]) -> list[StoreEntry]:
        changed = []
        for cid in dict.fromkeys(container_ids):
            entry = self.state.write(pod_key(self._origin, cid), self.own_pods.get(cid), self._origin)
            if entry is not None:
                changed.append(entry)
        return changed

    # -- gossip from peers ----------------------------------------------------------
    def receive(self, entries: Iterable[StoreEntry]) -> tuple[list[StoreEntry], list[StoreEntry]]:
        """(entries that changed our map, our corrections to broadcast)."""
        new = self.state.merge(entries) or []
        prefix = pod_key(self._origin, "")
        mine = [e.key[len(prefix):] for e in new if e.key.startswith(prefix)]
        corrections = self._assert_own(mine)
        return new + corrections, corrections

    def peers_removed(self, peers: Iterable[PeerName]) -> list[StoreEntry]:
        """Tombstone the pods of peers the mesh has forgotten (never our own)."""
        gone = {str(p) for p in peers if p != self.ourself}
        changed = []
        for key, entry in list(self.state.entries.items()):
            kind, peer, _ = split_key(key)
            if kind == POD and peer in gone and not entry.tombstone:
                changed.append(self.state.write(key, None, self._origin))
        return changed

    # -- persistence -----------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        return {"ourself": self._origin, "own_pods": self.own_pods,
                "entries": [[e.key, e.version, e.origin, e.value] for e in self.state.entries.values()]}

    def restore(self, data: Mapping[str, Any]) -> list[StoreEntry]:
        """Load a snapshot (ours, or a previous peer name's: then its pods are not ours)."""
        entries = [_entry(row) for row in data.get("entries", [])]
        self.state.merge(entries)
        if data.get("ourself") == self._origin:
            self.own_pods = {str(k): dict(v) for k, v in data.get("own_pods", {}).items()}
        return list(self.state.entries.values())
