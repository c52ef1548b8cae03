"""Time as a parameter (STYLE.md 3): cores take `now`; shells get it from a Clock."""
from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock Unix seconds (for values that travel, e.g. DNS tombstones)."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for timers and deadlines)."""


class RealClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock tests move by hand. Both readings advance together."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._wall = start
        self._mono = 0.0

    def now(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a manual clock only moves forward")
        self._wall += seconds
        self._mono += seconds


async def sleep_or_wake(wake: asyncio.Event, timeout: float | None) -> bool:
    """The shells' timer loops: sleep `timeout` seconds (None: until woken) or until `wake`
    is set, whichever comes first; clear `wake` and say whether it woke us. (asyncio.timeout,
    not wait_for: 3.11's wait_for can swallow a cancellation.)"""
    woken = True
    try:
        async with asyncio.timeout(None if timeout is None else max(0.0, timeout)):
            await wake.wait()
    except TimeoutError:
        woken = False
    wake.clear()
    return woken
