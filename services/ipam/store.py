"""The allocator's persisted state in sqlite (Weave keeps the same in BoltDB: `peername`,
`ring`, `ownedAddresses`).

Tables: `meta` (snapshot version, peer name, range), `ring` (one row, the ring as JSON)
and `owned` (one row per address a container holds). `save` writes a snapshot from
`persistence.make_snapshot` in one transaction, touching only the owned rows that
changed since the last save. WAL with synchronous=NORMAL: a committed save survives
the process being killed (the tests do `kill -9`); the last few may be lost on power
failure, which the ring repairs from peers' gossip as it does for Weave.

Every method blocks (disk I/O): the shell calls them through asyncio.to_thread, one at
a time.
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ring (id INTEGER PRIMARY KEY CHECK (id = 1), data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS owned (ident TEXT NOT NULL, cidr TEXT NOT NULL, is_container INTEGER NOT NULL,
                                  seq INTEGER NOT NULL, PRIMARY KEY (ident, cidr));
"""
Row = tuple[str, str, bool, int]  # ident, cidr, is_container, position in the ident's list


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self._saved: set[Row] = set(self._rows())

    def close(self) -> None:
        self.db.close()

    def load(self) -> dict | None:
        """The stored snapshot (persistence.py's shape), or None if nothing was stored."""
        meta = dict(self.db.execute("SELECT key, value FROM meta"))
        ring = self.db.execute("SELECT data FROM ring WHERE id = 1").fetchone()
        if not meta or ring is None:
            return None
        owned: dict[str, dict] = {}
        for ident, cidr, is_container, _ in sorted(self._rows(), key=lambda r: (r[0], r[3])):
            entry = owned.setdefault(ident, {"is_container": is_container, "cidrs": []})
            entry["cidrs"].append(cidr)
        try:
            version = int(meta.get("version", "0"))
        except ValueError:
            version = 0
        return {"version": version, "peer_name": meta.get("peer_name", ""), "range": meta.get("range", ""),
                "ring": json.loads(ring[0]), "owned": owned}

    def save(self, snapshot: dict) -> None:
        rows = {(ident, cidr, bool(d["is_container"]), i)
                for ident, d in snapshot["owned"].items() for i, cidr in enumerate(d["cidrs"])}
        gone, new = self._saved - rows, rows - self._saved
        with self._transaction():
            self.db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", [
                ("version", str(snapshot["version"])), ("peer_name", snapshot["peer_name"]),
                ("range", snapshot["range"])])
            self.db.execute("INSERT OR REPLACE INTO ring (id, data) VALUES (1, ?)",
                            (json.dumps(snapshot["ring"], separators=(",", ":")),))
            self.db.executemany("DELETE FROM owned WHERE ident = ? AND cidr = ?", [(r[0], r[1]) for r in gone])
            self.db.executemany("INSERT OR REPLACE INTO owned (ident, cidr, is_container, seq) VALUES (?, ?, ?, ?)",
                                [(r[0], r[1], int(r[2]), r[3]) for r in new])
        self._saved = rows

    def clear(self) -> None:
        """Forget everything (a snapshot for another peer name or range, as Weave discards it)."""
        with self._transaction():
            for table in ("meta", "ring", "owned"):
                self.db.execute(f"DELETE FROM {table}")
        self._saved = set()

    def _rows(self) -> list[Row]:
        return [(i, c, bool(k), s) for i, c, k, s in self.db.execute("SELECT ident, cidr, is_container, seq FROM owned")]

    def _transaction(self):
        return _Transaction(self.db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
