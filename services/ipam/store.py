"""The allocator's persisted state in sqlite (Weave keeps the same in BoltDB: `peername`,
`ring`, `ownedAddresses`).

Tables: `meta` (snapshot version, peer name, range), `ring` (one row, the ring as JSON)
and `owned` (one row per address a container holds). `save` writes a delta from
`persistence.make_delta` in one transaction: the meta, the ring, and the rows of only
the containers that changed, so an allocation costs the same with 10 or 10,000
containers. WAL with synchronous=NORMAL: a committed save survives the process being
killed (the tests do `kill -9`); the last few may be lost on power failure, which the
ring repairs from peers' gossip as it does for Weave.

Every method blocks (disk I/O): the shell calls them through asyncio.to_thread, one at
a time.
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

DB_FILE = "ipam.db"
"""The store's file in the state dir."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ring (id INTEGER PRIMARY KEY CHECK (id = 1), data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS owned (ident TEXT NOT NULL, seq INTEGER NOT NULL, cidr TEXT NOT NULL,
                                  is_container INTEGER NOT NULL, PRIMARY KEY (ident, seq));
"""


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def load(self) -> dict | None:
        """The stored snapshot (persistence.py's shape), or None if nothing was stored."""
        meta = dict(self.db.execute("SELECT key, value FROM meta"))
        ring = self.db.execute("SELECT data FROM ring WHERE id = 1").fetchone()
        if not meta or ring is None:
            return None
        owned: dict[str, dict] = {}
        for ident, cidr, is_container in self.db.execute(
                "SELECT ident, cidr, is_container FROM owned ORDER BY ident, seq"):
            owned.setdefault(ident, {"is_container": bool(is_container), "cidrs": []})["cidrs"].append(cidr)
        try:
            version = int(meta.get("version", "0"))
        except ValueError:
            version = 0
        return {"version": version, "peer_name": meta.get("peer_name", ""), "range": meta.get("range", ""),
                "ring": json.loads(ring[0]), "owned": owned}

    def save(self, delta: dict) -> None:
        """Write a delta (or a whole snapshot: every ident is then "changed")."""
        meta = [("version", str(delta["version"])), ("peer_name", delta["peer_name"]), ("range", delta["range"])]
        ring = json.dumps(delta["ring"], separators=(",", ":"))
        rows = [(ident, seq, cidr, int(entry["is_container"]))
                for ident, entry in delta["owned"].items() if entry for seq, cidr in enumerate(entry["cidrs"])]
        with self._transaction():
            self.db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", meta)
            self.db.execute("INSERT OR REPLACE INTO ring (id, data) VALUES (1, ?)", (ring,))
            self.db.executemany("DELETE FROM owned WHERE ident = ?", [(ident,) for ident in delta["owned"]])
            self.db.executemany("INSERT INTO owned (ident, seq, cidr, is_container) VALUES (?, ?, ?, ?)", rows)

    def clear(self) -> None:
        """Forget everything (a snapshot for another peer name or range, as Weave discards it)."""
        with self._transaction():
            for table in ("meta", "ring", "owned"):
                self.db.execute(f"DELETE FROM {table}")

    def _transaction(self) -> "_Transaction":
        return _Transaction(self.db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
