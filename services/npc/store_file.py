"""The policy store on disk (`<state-dir>/npc-store.json`, mode 0600).

Written whole, atomically (temp file + rename), at most every `delay_s` after a change
and once more on stop; read once at start. A missing or unreadable file means an empty
store (logged): gossip from the other hosts refills it.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from pathlib import Path

from shared.errors import RemoteProtocolError

from .sources import Entry, PolicySources

log = logging.getLogger("weave.npc.store")


class StoreFile:
    def __init__(self, path: Path, sources: PolicySources, delay_s: float) -> None:
        self.path, self.sources, self.delay_s = path, sources, delay_s
        self._dirty = asyncio.Event()
        self._lock = threading.Lock()  # a cancelled writer's thread may still be running

    def load(self) -> list[Entry]:
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

    def write(self) -> None:
        """Blocking."""
        data = json.dumps(self.sources.snapshot())
        with self._lock:
            tmp = self.path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(data)
            os.replace(tmp, self.path)

    async def run(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(self.delay_s)
            self._dirty.clear()
            try:
                await asyncio.to_thread(self.write)
            except OSError as exc:
                log.warning("cannot save the policy store: %s", exc)
