"""Process checks for e2e tests: whether pids we started are gone."""
from __future__ import annotations

import time
from pathlib import Path


def running(pid: int) -> bool:
    """True while pid is a live process (a zombie awaiting its reaper counts as dead)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_all_dead(pids: list[int], timeout: float = 5.0) -> list[int]:
    """Wait until none of `pids` runs; return those still running after `timeout`."""
    deadline = time.monotonic() + timeout
    while any(running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    return [p for p in pids if running(p)]


def wait_until(cond, timeout: float = 30.0, what: str = "condition", every: float = 0.2):
    """Poll `cond` until it returns something truthy (returned); AssertionError naming
    `what` and the last value after `timeout` seconds. Tests wait on conditions, not sleeps."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")
