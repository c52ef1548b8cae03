"""The reading layer over /proc: processes of some network namespaces, their sockets.

Cheap enough for every second (the probe's spy interval):
- one `stat` of /proc/<pid>/ns/net per pid tells its network namespace; only pids of
  the namespaces asked for (the host's and its attached containers') are read further,
  so on a machine running several testbed hosts each probe sees only its own;
- for those, /proc/<pid>/stat and a listing of /proc/<pid>/fd (the open files count)
  every time; argv (cmdline) and the open files limit once per process, cached under
  (pid, start time), so a recycled pid is read afresh;
- sockets: /proc/<pid>/net/tcp{,6} once per namespace (any of its pids shows the
  namespace's table; no setns), then the fd links of that namespace's processes are
  read only while a live connection's inode is still unknown, stopping as soon as all
  are found; inode -> process is cached while the socket lives.
A process that exits while it is being read is skipped (ENOENT/ESRCH), never an error.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import NamedTuple

from services.scope.probe import procfs, procnet

_GONE = (FileNotFoundError, ProcessLookupError, NotADirectoryError)


class ProcessSample(NamedTuple):
    """One process at one spy (a tuple: one is built per process per second)."""

    pid: int
    ppid: int
    name: str
    cmdline: str
    threads: int
    jiffies: int
    rss_bytes: int
    rss_limit: int
    open_files: int
    open_files_limit: int
    netns: int
    start_ticks: int


@dataclass
class NamespaceSockets:
    """The live TCP connections of one network namespace, with the pid owning each
    socket (0 when no process of the namespace holds it: orphaned, or gone)."""

    netns: int
    connections: list[procnet.Connection]
    owners: dict[int, int] = field(default_factory=dict)
    """socket inode -> pid."""


@dataclass
class _Cached:
    name: str
    cmdline: str
    open_files_limit: int


class ProcWalker:
    def __init__(self, proc_root: str = "/proc") -> None:
        self.root = proc_root
        self.page_size = os.sysconf("SC_PAGE_SIZE")
        self._static: dict[tuple[int, int], _Cached] = {}
        self._fds: dict[int, list[str]] = {}
        self._socket_owner: dict[int, tuple[int, int]] = {}
        """socket inode -> (pid, start ticks) of the process found holding it."""
        self.fd_links_read = 0
        """fd links read since start (how much socket mapping costs)."""
        self.processes = 0
        """Processes found by the last walk."""

    def netns_of(self, pid: int | str) -> int:
        """Inode of a process's network namespace ('self' for ours); 0 if it is gone."""
        try:
            return os.stat(f"{self.root}/{pid}/ns/net").st_ino
        except (*_GONE, PermissionError):
            return 0

    def walk(self, namespaces: set[int]) -> list[ProcessSample]:
        """Every process whose network namespace is in `namespaces`."""
        out, alive = [], set()
        for entry in os.listdir(self.root):
            if not entry.isdigit():
                continue
            netns = self.netns_of(entry)
            if netns not in namespaces:
                continue
            sample = self._read(int(entry), netns)
            if sample is not None:
                out.append(sample)
                alive.add((sample.pid, sample.start_ticks))
        self._static = {k: v for k, v in self._static.items() if k in alive}
        self._fds = {s.pid: self._fds[s.pid] for s in out if s.pid in self._fds}
        self.processes = len(out)
        return out

    def _read(self, pid: int, netns: int) -> ProcessSample | None:
        base = f"{self.root}/{pid}"
        try:
            stat = procfs.parse_pid_stat(_read_once(f"{base}/stat"))
            fds = os.listdir(f"{base}/fd")
            static = self._static.get((pid, stat.start_ticks))
            if static is None:
                static = self._read_static(base, stat)
                self._static[(pid, stat.start_ticks)] = static
        except (*_GONE, PermissionError, procfs.ProcFormatError):
            return None
        self._fds[pid] = fds
        return ProcessSample(pid, stat.ppid, static.name, static.cmdline, stat.threads, stat.jiffies,
                             stat.rss_pages * self.page_size, stat.rss_limit, len(fds), static.open_files_limit,
                             netns, stat.start_ticks)

    @staticmethod
    def _read_static(base: str, stat: procfs.PidStat) -> _Cached:
        name, cmdline = procfs.parse_cmdline(_read(f"{base}/cmdline", 1 << 20), stat.comm)
        return _Cached(name, cmdline, procfs.parse_open_files_limit(_read_once(f"{base}/limits")))

    # -- sockets ----------------------------------------------------------------------
    def read_tcp(self, pid: int | str) -> list[procnet.Connection] | None:
        """The live connections of `pid`'s namespace; None if the pid is gone."""
        seen: set[int] = set()
        out: list[procnet.Connection] = []
        try:
            for name in ("tcp", "tcp6"):
                try:
                    out += procnet.parse_tcp(_read(f"{self.root}/{pid}/net/{name}", 1 << 30), seen)
                except FileNotFoundError:
                    if name == "tcp":
                        raise  # tcp6 is missing without IPv6; tcp missing means the pid went
        except (*_GONE, PermissionError):
            return None
        return out

    def sockets(self, netns: int, samples: list[ProcessSample], reader: int | str) -> NamespaceSockets | None:
        """Connections of namespace `netns` read through pid `reader` (one of its
        processes, or 'self'), each mapped to the process holding its socket."""
        conns = self.read_tcp(reader)
        if conns is None:
            return None
        procs = {s.pid: s for s in samples if s.netns == netns}
        owners: dict[int, int] = {}
        unknown: set[int] = set()
        for c in conns:
            if not c.inode:
                continue
            cached = self._socket_owner.get(c.inode)
            if cached is not None and cached[0] in procs and procs[cached[0]].start_ticks == cached[1]:
                owners[c.inode] = cached[0]
            else:
                unknown.add(c.inode)
        if unknown:
            self._scan_fds(procs, unknown, owners)
        return NamespaceSockets(netns, conns, owners)

    def _scan_fds(self, procs: dict[int, ProcessSample], unknown: set[int], owners: dict[int, int]) -> None:
        for pid, sample in procs.items():
            for fd in self._fds.get(pid, ()):
                try:
                    link = os.readlink(f"{self.root}/{pid}/fd/{fd}")
                except (*_GONE, PermissionError):
                    continue
                self.fd_links_read += 1
                if not link.startswith("socket:["):
                    continue
                inode = int(link[8:-1])
                self._socket_owner[inode] = (pid, sample.start_ticks)
                if inode in unknown:
                    owners[inode] = pid
                    unknown.discard(inode)
                    if not unknown:
                        return

    def forget_sockets(self, live: set[int]) -> None:
        """Drop cached owners of sockets no longer in any table (call once per spy)."""
        self._socket_owner = {i: o for i, o in self._socket_owner.items() if i in live}


def _read(path: str, limit: int = 1 << 16) -> bytes:
    """The whole of a /proc file, up to `limit` bytes (os-level calls: a buffered file
    object costs more than the read itself for these small files)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        size = 0
        while size < limit:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _read_once(path: str) -> bytes:
    """A /proc file the kernel produces in one read (stat, limits: well under 64 KiB)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 65536)
    finally:
        os.close(fd)
