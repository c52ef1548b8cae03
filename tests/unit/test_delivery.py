"""shared.delivery: one subscription's ordered, bounded delivery."""
import asyncio

from shared.delivery import Delivery


async def test_offers_before_the_task_first_runs_fill_the_limit_and_later_ones_take_freed_places():
    release = asyncio.Event()
    handled: list = []

    async def slow(n):
        await release.wait()
        handled.append(n)

    d = Delivery("weave.slow", slow, limit=3)
    for n in range(7):  # one read's worth, before the delivery task has run at all
        d.offer(n)
    assert d.dropped == 4
    await asyncio.sleep(0)  # the task takes 0 in hand: one place frees
    for n in range(7, 10):
        d.offer(n)
    assert d.dropped == 6
    release.set()
    await d.idle(1.0)
    assert handled == [0, 1, 2, 7]
    d.stop()


async def test_a_failing_callback_is_logged_and_delivery_carries_on(caplog):
    handled: list = []

    async def cb(n):
        if n == 1:
            raise ValueError("boom")
        handled.append(n)

    d = Delivery("weave.x", cb)
    for n in range(3):
        d.offer(n)
    await d.idle(1.0)
    assert handled == [0, 2] and "callback for weave.x failed" in caplog.text
    d.stop()
