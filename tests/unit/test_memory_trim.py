"""The services' default executor gives free malloc memory back after work in worker
threads: one trim after a burst, none while idle."""
from __future__ import annotations

import asyncio

from shared.memory import TrimmingExecutor


def test_a_burst_of_thread_work_is_followed_by_one_trim_and_idle_by_none():
    async def main() -> TrimmingExecutor:
        loop = asyncio.get_running_loop()
        ex = TrimmingExecutor(loop, delay_s=0.05)
        loop.set_default_executor(ex)
        big = await asyncio.gather(*(asyncio.to_thread(bytearray, 1 << 20) for _ in range(20)))
        assert len(big) == 20 and ex.trims == 0  # not during the burst
        del big
        await asyncio.sleep(0.2)
        assert ex.trims == 1  # once after it
        await asyncio.sleep(0.2)
        assert ex.trims == 1  # and not again while nothing runs
        await asyncio.to_thread(sum, range(10))
        await asyncio.sleep(0.2)
        return ex

    ex = asyncio.run(main())
    assert ex.trims == 2
