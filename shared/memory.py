"""Free memory given back to the system after a burst of work in worker threads.

glibc gives each thread that allocates its own malloc arena, and frees into an arena do
not go back to the system on their own: the datapath's netlink work (pyroute2 in
`asyncio.to_thread` workers) left its two worker arenas growing by ~1 MB a minute under
one attach and one detach a second (`bench.footprint --soak`), with Python's own
allocations flat (tracemalloc). `malloc_trim(0)` returns their free pages.

`TrimmingExecutor` is the event loop's default executor in every service
(shared/service.py): when work it ran finishes, a trim is scheduled TRIM_DELAY_S later
(one at a time), so a burst costs one trim and an idle process is never woken for it.
"""
from __future__ import annotations

import asyncio
import ctypes
import logging
from concurrent.futures import Future, ThreadPoolExecutor

log = logging.getLogger(__name__)
TRIM_DELAY_S = 2.0


def _malloc_trim() -> "ctypes._CFuncPtr | None":
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


class TrimmingExecutor(ThreadPoolExecutor):
    def __init__(self, loop: asyncio.AbstractEventLoop, delay_s: float = TRIM_DELAY_S) -> None:
        super().__init__(thread_name_prefix="worker")
        self._loop, self._delay_s = loop, delay_s
        self._trim = _malloc_trim()
        self._pending: asyncio.TimerHandle | None = None
        self.trims = 0
        """How many trims ran (for tests and metrics)."""

    @property
    def trim_pending(self) -> bool:
        return self._pending is not None

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future = super().submit(fn, *args, **kwargs)
        if self._trim is not None:
            future.add_done_callback(self._done)
        return future

    def _done(self, _: Future) -> None:  # in the worker thread
        try:
            self._loop.call_soon_threadsafe(self._schedule)
        except RuntimeError:  # the loop is closed: nothing to trim for
            pass

    def _schedule(self) -> None:
        if self._pending is None:
            self._pending = self._loop.call_later(self._delay_s, self._run)

    def _run(self) -> None:
        self._pending = None
        self._trim(0)
        self.trims += 1
