"""Parsers of the /proc files the probe reads (sans-I/O: bytes in, values out).

Each parser takes the file's bytes exactly as read and returns a plain value; a file
that is not in the kernel's format raises `ProcFormatError` (a process that exited
between the directory listing and the read is the reader's business, not ours).
Field meanings and positions are proc(5)'s; what Scope derives from them follows
weaveworks/scope probe/process/walker_linux.go and probe/host/system_linux.go.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


class ProcFormatError(ValueError):
    """A /proc file did not have the kernel's format."""

    def __init__(self, path: str, detail: str) -> None:
        super().__init__(f"{path}: {detail}")
        self.path, self.detail = path, detail


class PidStat(NamedTuple):
    """/proc/<pid>/stat, the fields the probe uses (a tuple: built for every process at
    every spy, so it is kept cheap)."""

    pid: int
    comm: str
    ppid: int
    jiffies: int
    """utime + stime, in clock ticks."""
    threads: int
    start_ticks: int
    """Start time after boot, clock ticks: with the pid, the identity of one process."""
    rss_pages: int
    rss_limit: int
    """RLIMIT_RSS in bytes (2**64-1 when unlimited): Scope's memory maximum."""


def parse_pid_stat(data: bytes) -> PidStat:
    """The comm is between the first '(' and the *last* ')': it may hold both, and spaces."""
    open_, close = data.find(b"("), data.rfind(b")")
    if open_ < 0 or close < open_:
        raise ProcFormatError("stat", "no (comm)")
    rest = data[close + 2:].split()
    if len(rest) < 23:
        raise ProcFormatError("stat", f"{len(rest)} fields after comm, expected >= 23")
    try:
        return PidStat(int(data[:open_]), data[open_ + 1:close].decode("utf-8", "replace"), int(rest[1]),
                       int(rest[11]) + int(rest[12]), int(rest[17]), int(rest[19]), int(rest[21]), int(rest[22]))
    except ValueError as exc:
        raise ProcFormatError("stat", str(exc)) from None


def parse_cmdline(cmdline: bytes, comm: str) -> tuple[str, str]:
    """(name, cmdline) as Scope shows them: the name is argv[0]; the command line is
    every argument followed by a space (NULs become spaces, so it ends with one). A
    process without a command line (a kernel thread, a zombie) is named `[comm]`."""
    end = cmdline.find(b"\0")
    name = (cmdline if end < 0 else cmdline[:end]).decode("utf-8", "replace")
    line = cmdline.replace(b"\0", b" ").decode("utf-8", "replace")
    if not name:
        name = f"[{comm.strip()}]"
    return name, line


def parse_open_files_limit(limits: bytes) -> int:
    """The soft 'Max open files' of /proc/<pid>/limits (0 if the line is missing;
    2**64-1 for 'unlimited')."""
    for line in limits.decode("ascii", "replace").splitlines():
        if line.startswith("Max open files"):
            soft = line[len("Max open files"):].split()[0]
            return 2**64 - 1 if soft == "unlimited" else int(soft)
    return 0


@dataclass(frozen=True)
class CpuTimes:
    """The aggregate `cpu` line of /proc/stat, in clock ticks, and the number of CPUs."""

    total: int
    """user + nice + system + idle + iowait + irq + softirq + steal (as Scope)."""
    idle: int
    """idle + iowait."""
    cpus: int


def parse_cpu_times(stat: bytes) -> CpuTimes:
    total = idle = None
    cpus = 0
    for line in stat.decode("ascii", "replace").splitlines():
        if line.startswith("cpu "):
            f = [int(x) for x in line.split()[1:9]]
            if len(f) < 8:
                raise ProcFormatError("/proc/stat", "short cpu line")
            user, nice, system, idle_, iowait, irq, softirq, steal = f
            total = user + nice + system + idle_ + iowait + irq + softirq + steal
            idle = idle_ + iowait
        elif line.startswith("cpu"):
            cpus += 1
    if total is None or idle is None:
        raise ProcFormatError("/proc/stat", "no cpu line")
    return CpuTimes(total, idle, max(cpus, 1))


def parse_meminfo(data: bytes) -> tuple[int, int]:
    """(used, total) bytes as Scope: MemTotal - MemFree - Buffers - Cached."""
    kb: dict[str, int] = {}
    for line in data.decode("ascii", "replace").splitlines():
        key, _, value = line.partition(":")
        if key in ("MemTotal", "MemFree", "Buffers", "Cached"):
            kb[key] = int(value.split()[0])
    if "MemTotal" not in kb:
        raise ProcFormatError("/proc/meminfo", "no MemTotal")
    used = kb["MemTotal"] - kb.get("MemFree", 0) - kb.get("Buffers", 0) - kb.get("Cached", 0)
    return used * 1024, kb["MemTotal"] * 1024


def parse_loadavg(data: bytes) -> float:
    """The 1-minute load average."""
    try:
        return float(data.split()[0])
    except (IndexError, ValueError):
        raise ProcFormatError("/proc/loadavg", repr(data[:40])) from None


def parse_uptime(data: bytes) -> int:
    """Whole seconds since boot."""
    try:
        return int(float(data.split()[0]))
    except (IndexError, ValueError):
        raise ProcFormatError("/proc/uptime", repr(data[:40])) from None


def cpu_percent(jiffies_delta: int, total_delta: int, cpus: int) -> float:
    """A process's CPU over an interval, in percent of one CPU (max 100 * cpus).

    Scope divides by the ticks of all CPUs together but reports a maximum of 100 * cpus,
    so a process that keeps one of two CPUs busy shows 50 of 200; here it shows 100 of
    200, which is what the maximum promises."""
    if total_delta <= 0:
        return 0.0
    return jiffies_delta * 100.0 * cpus / total_delta
