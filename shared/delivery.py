"""One subscription's delivery, as NATS gives it (both bus clients use it): messages go
to the callback one at a time, in order, from a task of its own; past `limit` waiting
messages new ones are dropped and counted (a slow consumer), never buffered without
bound; a callback that raises is logged and delivery carries on."""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

log = logging.getLogger(__name__)
PENDING_LIMIT = 10_000  # per subscription, NATS's default for a slow consumer


class Delivery:
    def __init__(self, name: str, callback: Callable[[Any], Awaitable[None]], limit: int = PENDING_LIMIT) -> None:
        self.name, self._callback = name, callback
        self._queue: asyncio.Queue = asyncio.Queue(limit)
        self.dropped = 0
        self._task = asyncio.get_running_loop().create_task(self._run())

    def offer(self, msg: Any) -> None:
        try:
            self._queue.put_nowait(msg)
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("slow consumer on %s: %d messages dropped", self.name, self.dropped)

    async def _run(self) -> None:
        while True:
            msg = await self._queue.get()
            try:
                await self._callback(msg)
            except Exception:  # the callback's own failure: logged, delivery carries on
                log.exception("callback for %s failed", self.name)
            finally:
                self._queue.task_done()

    async def idle(self, timeout: float) -> None:
        """Return once what was offered so far was handled, or after `timeout`."""
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
        except asyncio.TimeoutError:
            pass

    def stop(self) -> None:
        self._task.cancel()
