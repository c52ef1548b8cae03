"""The services' default executor gives free malloc memory back after work in worker
threads: one trim after a burst, none while idle."""
from __future__ import annotations

import asyncio

from shared.memory import TrimmingExecutor


async def _until(cond, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_a_burst_of_thread_work_is_followed_by_one_trim_and_idle_by_none():
    async def main() -> None:
        loop = asyncio.get_running_loop()
        ex = TrimmingExecutor(loop, delay_s=0.5)  # longer than the burst
        loop.set_default_executor(ex)
        assert not ex.trim_pending  # nothing ran: nothing to trim
        big = await asyncio.gather(*(asyncio.to_thread(bytearray, 1 << 20) for _ in range(20)))
        del big
        await _until(lambda: ex.trims >= 1)
        assert ex.trims == 1 and not ex.trim_pending  # one trim for the burst, none waiting
        await asyncio.to_thread(sum, range(10))
        await _until(lambda: ex.trims == 2)
        assert not ex.trim_pending

    asyncio.run(main())
