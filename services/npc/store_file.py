"""The policy store on disk (`<state-dir>/npc-store.json`, mode 0600).

Written whole, durably and atomically (`shared.durable.write_atomic`: temp file, fsync,
rename). Two ways: `save()` right away, awaited before `weave policy apply|delete` is
answered (durable before acknowledged: a policy the user was told is stored survives a
SIGKILL of npc, even on a host whose broadcast reached nobody); and `changed()` for
what gossip and container events bring, coalesced, at most every `delay_s` (those can
be re-taught by peers and the datapath). Read once at start. A missing or unreadable
file means an empty store (logged): gossip from the other hosts refills it.

Every write takes the store as it is when it is asked for (in the event loop) and a
generation number; a write older than one already on disk is skipped, so concurrent
writes never leave an older store behind a newer one.
"""
from __future__ import annotations

import asyncio
import json
import logging
import threading
from pathlib import Path

from shared.durable import write_atomic
from shared.errors import RemoteProtocolError

from .sources import StoreEntry, PolicySources

log = logging.getLogger("weave.npc.store")
STORE_FILE = "npc-store.json"
"""The gossiped policy store and our own pods, in the state dir."""


class StoreFile:
    def __init__(self, path: Path, sources: PolicySources, delay_s: float) -> None:
        self.path, self.sources, self.delay_s = path, sources, delay_s
        self._dirty = asyncio.Event()
        self._lock = threading.Lock()  # a cancelled writer's thread may still be running
        self._generation = 0  # of the last snapshot taken
        self._written = 0  # of the last snapshot on disk

    def load(self) -> list[StoreEntry]:
        """Restore the sources from disk; returns every entry now held."""
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            log.warning("cannot read %s (%s): starting with an empty policy store", self.path, exc)
            return []
        try:
            return self.sources.restore(data)
        except (RemoteProtocolError, ValueError, AttributeError, TypeError) as exc:
            log.warning("ignoring %s: %s", self.path, exc)
            return []

    def changed(self) -> None:
        self._dirty.set()

    def take(self) -> tuple[int, str]:
        """The store now, to write (call in the event loop, where it changes)."""
        self._generation += 1
        return self._generation, json.dumps(self.sources.snapshot())

    def write(self, taken: tuple[int, str] | None = None) -> None:
        """Blocking: write `taken` (default: the store now) unless a newer one is on disk."""
        generation, data = taken or self.take()
        with self._lock:
            if generation <= self._written:
                return
            write_atomic(self.path, data, 0o600)
            self._written = generation

    async def save(self) -> None:
        """Durably, now (raises OSError)."""
        await asyncio.to_thread(self.write, self.take())

    async def run(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(self.delay_s)
            self._dirty.clear()
            try:
                await self.save()
            except OSError as exc:
                log.warning("cannot save the policy store: %s", exc)
