"""Memory: free pages given back after a burst of work in worker threads, and identical
pages merged by the kernel when the operator asks for it (`weave launch --merge-pages`).

glibc gives each thread that allocates its own malloc arena, and frees into an arena do
not go back to the system on their own: the datapath's netlink work (pyroute2 then, in
`asyncio.to_thread` workers) left its two worker arenas growing by ~1 MB a minute under
one attach and one detach a second (`bench.footprint --soak`), with Python's own
allocations flat (tracemalloc). `malloc_trim(0)` returns their free pages.

`TrimmingExecutor` is the event loop's default executor in every service
(shared/service.py): when work it ran finishes, a trim is scheduled TRIM_DELAY_S later
(one at a time), so a burst costs one trim and an idle process is never woken for it.

`merge_pages()` (`weave launch --merge-pages`): each Python process of the stack holds
about 11 MB of pages copied from the supervisor's preloaded heap, most of them identical
or nearly so in every process (a reference count raised and dropped: docs/decisions.md,
"What a host's stack costs at rest"). The kernel's same-page merging (KSM) folds
identical pages back into one. `prctl(PR_SET_MEMORY_MERGE)` (Linux 6.4) asks for it for
all of a process's memory, and the kernel keeps it for every process it forks or execs,
so the supervisor asking covers the whole stack, nats-server too. The merging itself is
done by the kernel's ksmd, which the host runs or not (/sys/kernel/mm/ksm/run = 1): a
setting for the whole machine, with a CPU cost of its own (it scans the pages), so weave
never turns it on; `merge_pages_problem()` says when it is off.
"""
from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

log = logging.getLogger(__name__)
TRIM_DELAY_S = 2.0


def _libc(name: str) -> "ctypes._CFuncPtr | None":
    """The C library's function `name` (errno kept for ctypes.get_errno), or None where
    this libc has none (malloc_trim and mallopt are glibc's)."""
    try:
        return getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None


class TrimmingExecutor(ThreadPoolExecutor):
    def __init__(self, loop: asyncio.AbstractEventLoop, delay_s: float = TRIM_DELAY_S) -> None:
        super().__init__(thread_name_prefix="worker")
        self._loop, self._delay_s = loop, delay_s
        self._trim = _libc("malloc_trim")
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


M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 128 * 1024
"""glibc's own starting value, kept fixed (see fix_mmap_threshold)."""


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Keep every allocation of `threshold` bytes or more in a mapping of its own, given
    back to the kernel when freed. glibc starts at 128 KiB but raises the threshold to the
    size of each such block freed (up to 32 MiB), and the heap's trim threshold with it:
    after a 400 KB snapshot string or a netlink dump's buffer is freed once, later ones come
    from the heap and their pages stay there. Setting it turns that adjustment off. In
    the soak (`bench.footprint --soak 360`, twice each, same order reversed) the datapath
    grew +1.1 % / +1.5 % after the first minute instead of +2.9 % / +2.5 %, from 0.6 MB
    less at minute one; the other services within noise. The kernel call per large
    allocation costs nothing at the stack's rates. False where malloc is not glibc's."""
    mallopt = _libc("mallopt")
    return mallopt is not None and mallopt(M_MMAP_THRESHOLD, threshold) == 1


PR_SET_MEMORY_MERGE = 67
PR_GET_MEMORY_MERGE = 68
KSM_RUN = Path("/sys/kernel/mm/ksm/run")


def merge_pages() -> str | None:
    """Let the kernel merge this process's identical pages with others' (KSM), and those
    of every process it starts from now on. None when done, else why not."""
    code, err = _prctl(PR_SET_MEMORY_MERGE, 1)
    if code == 0:
        return None
    return _no_merging(err)


def merge_pages_problem(ksm_run: Path = KSM_RUN) -> str | None:
    """What keeps `--merge-pages` from saving memory on this host, or None: a kernel
    without KSM or without PR_SET_MEMORY_MERGE (6.4), or ksmd not running."""
    code, err = _prctl(PR_GET_MEMORY_MERGE, 0)
    if code < 0:
        return _no_merging(err)
    try:
        run = ksm_run.read_text().strip()
    except OSError:
        return "this kernel has no KSM (/sys/kernel/mm/ksm): pages are not merged"
    if run != "1":
        return (f"the kernel's page merging (ksmd) is off here ({ksm_run} is {run}): the stack's pages "
                f"will merge once the host turns it on (echo 1 > {ksm_run}; ksmd's scanning costs CPU)")
    return None


def _no_merging(err: int) -> str:
    if err == errno.EINVAL:
        return "this kernel cannot merge a process's pages (PR_SET_MEMORY_MERGE needs Linux 6.4 with KSM)"
    return f"page merging refused: {os.strerror(err)}"


def _prctl(option: int, arg: int) -> tuple[int, int]:
    prctl = _libc("prctl")
    if prctl is None:
        return -1, errno.ENOSYS
    code = prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
    return code, ctypes.get_errno() if code < 0 else 0
