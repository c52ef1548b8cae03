"""Upstream (fallback) resolvers from resolv.conf (weave:nameserver/dns.go `upstream`).

Names weaveDNS does not own are forwarded to the `nameserver`s of `--resolv-conf`.
Weave re-reads that file when its modification time changes, looking at it at most
every 5 s, and drops its own listen address from the list so it never forwards to
itself. Here the file system stays in the shell: `Upstream` decides when to stat and
when to re-read, and parses the text it is handed.
"""
from __future__ import annotations

from dataclasses import dataclass

RECHECK_INTERVAL_S = 5.0  # weave stats resolv.conf at most this often
DEFAULT_PORT = 53


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """The parts of resolv.conf weave uses (miekg `dns.ClientConfig`)."""

    servers: tuple[str, ...] = ()
    search: tuple[str, ...] = ()
    port: int = DEFAULT_PORT
    ndots: int = 1
    timeout_s: int = 5
    attempts: int = 2


def parse_resolv_conf(text: str, exclude: str | None = None) -> ClientConfig:
    """Parse resolv.conf as miekg `ClientConfigFromReader` does (first word of a line
    is the keyword; unknown lines ignored), leaving out server `exclude`."""
    servers: list[str] = []
    search: tuple[str, ...] = ()
    opts = {"ndots": 1, "timeout": 5, "attempts": 2}
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        keyword, args = words[0], words[1:]
        if keyword == "nameserver" and args:
            servers.append(args[0])
        elif keyword == "domain":
            search = tuple(args[:1])
        elif keyword == "search":
            search = tuple(args)
        elif keyword == "options":
            _parse_options(args, opts)
    return ClientConfig(servers=tuple(s for s in servers if s != exclude), search=search,
                        ndots=opts["ndots"], timeout_s=opts["timeout"],
                        attempts=opts["attempts"])


# option -> (lowest, highest) value accepted; out-of-range values are clamped.
_OPTION_RANGES = {"ndots": (0, 15), "timeout": (1, None), "attempts": (1, None)}


def _parse_options(args: list[str], opts: dict[str, int]) -> None:
    for arg in args:
        name, sep, value = arg.partition(":")
        if not sep or name not in _OPTION_RANGES:
            continue
        low, high = _OPTION_RANGES[name]
        n = _atoi(value)
        n = max(low, n)
        opts[name] = min(high, n) if high is not None else n


def _atoi(text: str) -> int:
    """Go's `strconv.Atoi` as miekg uses it: 0 when the text is not a number."""
    try:
        return int(text, 10)
    except ValueError:
        return 0


def should_stat(last_check: float | None, now: float) -> bool:
    """True if resolv.conf may be looked at again (never, or 5 s or more ago)."""
    return last_check is None or now - last_check >= RECHECK_INTERVAL_S


def should_reread(last_mtime: float | None, mtime: float | None) -> bool:
    """True if the file must be read: it exists and its mtime differs from the one
    the current config was read at (weave compares for inequality, not newer)."""
    return mtime is not None and mtime != last_mtime


class Upstream:
    """The current upstream config and when it was last checked.

    Shell protocol: `if up.check_due(now): m = stat(path)` (None if that failed);
    `if up.changed(m): up.load(m, read(path))`; then forward to `up.config.servers`.
    A failed stat or read keeps the config we had (weave does the same).
    """

    def __init__(self, exclude: str | None = None) -> None:
        self.exclude = exclude
        self.config = ClientConfig()
        self._last_check: float | None = None
        self._last_mtime: float | None = None

    def check_due(self, now: float) -> bool:
        """True if the shell should stat the file now; counts as the check."""
        if not should_stat(self._last_check, now):
            return False
        self._last_check = now
        return True

    def changed(self, mtime: float | None) -> bool:
        return should_reread(self._last_mtime, mtime)

    def load(self, mtime: float, text: str) -> ClientConfig:
        self.config = parse_resolv_conf(text, self.exclude)
        self._last_mtime = mtime
        return self.config

    def addresses(self) -> list[tuple[str, int]]:
        """(host, port) of each server, in resolv.conf order."""
        return [(s, self.config.port) for s in self.config.servers]
