"""Durable before acknowledged: the two ways a service puts a change on disk before it
confirms it to a caller (a bus reply, an HTTP 200, a CLI exit 0).

- `write_atomic(path, data)`: a whole file replaced atomically: write a temporary file
  beside it, fsync it, rename it over the old one, fsync the directory. A reader (or a
  process restarted after SIGKILL at any instant) sees the old file or the new one,
  never a mix. Cost grows with the file: use it for small files (the datapath's
  attachments, gossip's targets, launch.json) or for compaction.
- `Journal`: an append-only log of JSON records, one per line, each append fsynced.
  Cost is per record (~0.1-0.3 ms here), whatever the size of the state. A torn last
  line (a crash in the middle of a write) is ignored when read back: that record was
  never acknowledged. `JournalWriter` groups the appends of concurrent callers into one
  write + fsync on a worker thread and resolves each caller when its record is on disk.

Crash model: SIGKILL of the process at any point, and power loss (hence fsync, not
only write). Every function here blocks except `JournalWriter.append`/`run`, which are
the asyncio side.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable

log = logging.getLogger("weave.durable")


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path | str, data: bytes | str | Iterable[bytes], mode: int = 0o644) -> None:
    """Replace `path` with `data` (or the pieces an iterable yields, written as they come,
    so that a large file is never whole in memory), durably and atomically (see the
    module docstring). Raises OSError; the old file is then untouched."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode()
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        for piece in ((data,) if isinstance(data, (bytes, bytearray, memoryview)) else data):
            view = memoryview(piece)
            while view:
                view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


class Journal:
    """An append-only file of JSON records (one line each). Blocking."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def read(self) -> list[Any]:
        """Every complete record, in order; [] when there is no file. A line that does
        not parse ends the read (a torn tail, or garbage: what follows it is not
        trusted either) and is logged."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        records = []
        for n, line in enumerate(data.split(b"\n")):
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except ValueError:
                log.warning("%s: ignoring line %d and what follows (torn or not ours)", self.path, n + 1)
                break
        return records

    def append(self, records: Iterable[Any]) -> None:
        """Write the records and fsync: on disk when this returns."""
        blob = b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in records)
        if not blob:
            return
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        view = memoryview(blob)
        while view:
            view = view[os.write(self._fd, view):]
        os.fsync(self._fd)

    def reset(self, records: Iterable[Any] = ()) -> None:
        """Replace the whole journal by `records` (atomically), e.g. after compaction
        into a snapshot; the next append goes after them."""
        self.close()
        blob = b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in records)
        write_atomic(self.path, blob, 0o600)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class JournalWriter:
    """Group commit for a `Journal` on the asyncio side: `await append(records)` returns
    once they are on disk (or raises the OSError that kept them off it). Appends queued
    while a write is in progress go together in the next one. Jobs run strictly in the
    order they were queued, and `call(fn)` queues any other blocking job (a compaction)
    in that same order."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._queue: list[tuple[str, Any, asyncio.Future]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    @property
    def running(self) -> bool:
        return self._task is not None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Finish what is queued, then stop."""
        if self._task is None:
            return
        await self.call(lambda: None)
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        self.journal.close()

    def append(self, records: list[Any]) -> asyncio.Future:
        """Queue records; the future resolves when they are durable. Queueing happens
        now (not when awaited): the order of calls is the order on disk."""
        return self._put("append", records)

    def call(self, fn) -> asyncio.Future:
        """Queue a blocking job after everything queued so far."""
        return self._put("call", fn)

    def _put(self, kind: str, arg: Any) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self._queue.append((kind, arg, fut))
        self._wake.set()
        return fut

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch = self._take_batch()
                try:
                    if batch[0][0] == "append":
                        await asyncio.to_thread(self.journal.append, [r for _, recs, _ in batch for r in recs])
                        result = None
                    else:
                        result = await asyncio.to_thread(batch[0][1])
                except Exception as exc:  # noqa: BLE001 - handed to every waiting caller
                    for _, _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                for _, _, fut in batch:
                    if not fut.done():
                        fut.set_result(result)

    def _take_batch(self) -> list[tuple[str, Any, asyncio.Future]]:
        """The longest run of appends at the head of the queue, or one call."""
        if self._queue[0][0] == "call":
            return [self._queue.pop(0)]
        n = 0
        while n < len(self._queue) and self._queue[n][0] == "append":
            n += 1
        batch, self._queue = self._queue[:n], self._queue[n:]
        return batch
