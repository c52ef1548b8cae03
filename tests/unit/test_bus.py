"""One behaviour suite, run against both Bus implementations (MemoryBus and a real
nats-server through NatsBus): they must be interchangeable."""
from __future__ import annotations

import asyncio
from typing import Literal

import pytest
from pydantic import Field

from shared.bus import BusError, BusMsg, MemoryBroker, MemoryBus
from shared.errors import WeaveError
from shared.nats_bus import NatsBus
from shared.schemas.base import Message


class Ping(Message):
    """Test request."""

    n: int = Field(description="a number")


class Pong(Message):
    """Test reply."""

    kind: Literal["pong"] = Field("pong", description="tag")
    n: int = Field(description="the number plus one")


class Note(Message):
    """Test event."""

    text: str = Field(description="text")


@pytest.fixture(params=["memory", "nats"])
async def make_bus(request, nats_server):
    buses = []
    broker = MemoryBroker()

    async def factory(service: str):
        if request.param == "memory":
            bus = MemoryBus(broker, service)
        else:
            bus = await NatsBus.connect(nats_server.url, nats_server.token, service)
        buses.append(bus)
        return bus

    yield factory
    for bus in buses:
        await bus.close()


async def settle(bus) -> None:
    """Make sure subscriptions are registered at the server before publishing."""
    if isinstance(bus, NatsBus):
        await bus.flush()


async def wait_for(cond, timeout=5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


async def test_request_reply_typed(make_bus):
    server, client = await make_bus("ipam"), await make_bus("cli")

    async def handler(req: Ping) -> Pong:
        return Pong(n=req.n + 1)

    await server.serve("weave.ipam.test1", Ping, handler)
    await settle(server)
    reply = await client.request("weave.ipam.test1", Ping(n=41), Pong)
    assert isinstance(reply, Pong) and reply.n == 42


async def test_handler_error_becomes_structured_reply(make_bus):
    server, client = await make_bus("ipam"), await make_bus("cli")

    async def handler(req: Ping) -> Pong:
        raise WeaveError("address 10.0.0.1 is outside every range", code="out_of_range")

    await server.serve("weave.ipam.test2", Ping, handler)
    await settle(server)
    with pytest.raises(BusError) as exc:
        await client.request("weave.ipam.test2", Ping(n=1), Pong)
    assert exc.value.code == "out_of_range"
    assert "outside every range" in exc.value.description


async def test_handler_bug_is_reported_and_service_survives(make_bus):
    server, client = await make_bus("ipam"), await make_bus("cli")
    calls = []

    async def handler(req: Ping) -> Pong:
        calls.append(req.n)
        if req.n == 0:
            raise ZeroDivisionError("boom")
        return Pong(n=req.n)

    await server.serve("weave.ipam.test3", Ping, handler)
    await settle(server)
    with pytest.raises(BusError) as exc:
        await client.request("weave.ipam.test3", Ping(n=0), Pong)
    assert exc.value.code == "internal" and "ZeroDivisionError" in exc.value.description
    assert (await client.request("weave.ipam.test3", Ping(n=5), Pong)).n == 5


async def test_malformed_request_gets_bad_request(make_bus):
    server, client = await make_bus("ipam"), await make_bus("cli")

    async def handler(req: Ping) -> Pong:
        return Pong(n=req.n)

    await server.serve("weave.ipam.test4", Ping, handler)
    await settle(server)
    with pytest.raises(BusError) as exc:
        await client.request("weave.ipam.test4", Note(text="not a ping"), Pong)
    assert exc.value.code == "bad_request"
    assert "Ping" in exc.value.description


async def test_no_responder_fails_fast(make_bus):
    client = await make_bus("cli")
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(BusError) as exc:
        await client.request("weave.dns.nobody", Ping(n=1), Pong, timeout=3.0)
    assert exc.value.code == "unavailable"
    assert loop.time() - started < 1.0


async def test_timeout(make_bus):
    server, client = await make_bus("dns"), await make_bus("cli")
    release = asyncio.Event()

    async def slow(req: Ping) -> Pong:
        await release.wait()
        return Pong(n=0)

    await server.serve("weave.dns.slow", Ping, slow)
    await settle(server)
    with pytest.raises(BusError) as exc:
        await client.request("weave.dns.slow", Ping(n=1), Pong, timeout=0.2)
    assert exc.value.code == "timeout"
    release.set()


async def test_reply_of_wrong_type_is_bad_reply(make_bus):
    server, client = await make_bus("dns"), await make_bus("cli")

    async def handler(req: Ping) -> Note:
        return Note(text="surprise")

    await server.serve("weave.dns.wrong", Ping, handler)
    await settle(server)
    with pytest.raises(BusError) as exc:
        await client.request("weave.dns.wrong", Ping(n=1), Pong)
    assert exc.value.code == "bad_reply"


async def test_publish_subscribe_in_order_with_wildcards(make_bus):
    a, b = await make_bus("gossip"), await make_bus("dns")
    got, got_wild = [], []

    async def on_msg(msg: BusMsg) -> None:
        got.append(Note.model_validate_json(msg.data).text)

    async def on_wild(msg: BusMsg) -> None:
        got_wild.append(msg.subject)

    await b.subscribe("weave.events.topology", on_msg)
    await b.subscribe("weave.events.*", on_wild)
    await settle(b)
    for i in range(50):
        await a.publish("weave.events.topology", Note(text=str(i)))
    await a.publish("weave.events.other", Note(text="x"))
    await wait_for(lambda: len(got) == 50 and len(got_wild) == 51)
    assert got == [str(i) for i in range(50)]
    assert got_wild.count("weave.events.other") == 1


async def test_failing_subscriber_keeps_receiving(make_bus):
    a, b = await make_bus("gossip"), await make_bus("dns")
    seen = []

    async def flaky(msg: BusMsg) -> None:
        seen.append(msg.data)
        if len(seen) == 1:
            raise RuntimeError("first message breaks the handler")

    await b.subscribe("weave.events.flaky", flaky)
    await settle(b)
    await a.publish("weave.events.flaky", Note(text="1"))
    await a.publish("weave.events.flaky", Note(text="2"))
    await wait_for(lambda: len(seen) == 2)


async def test_queue_group_delivers_once(make_bus):
    a, b1, b2 = await make_bus("x"), await make_bus("w1"), await make_bus("w2")
    hits = []

    async def h1(msg):
        hits.append(1)

    async def h2(msg):
        hits.append(2)

    await b1.subscribe("weave.events.work", h1, queue="workers")
    await b2.subscribe("weave.events.work", h2, queue="workers")
    await settle(b1)
    await settle(b2)
    for _ in range(20):
        await a.publish("weave.events.work", Note(text="job"))
    await wait_for(lambda: len(hits) == 20)
    await asyncio.sleep(0.05)
    assert len(hits) == 20


async def test_trace_context_crosses_request_reply(make_bus, spans):
    server, client = await make_bus("ipam"), await make_bus("cli")

    async def handler(req: Ping) -> Pong:
        return Pong(n=req.n)

    await server.serve("weave.ipam.traced", Ping, handler)
    await settle(server)
    spans.clear()
    await client.request("weave.ipam.traced", Ping(n=1), Pong)
    finished = {s.name: s for s in spans.get_finished_spans() if "traced" in s.name}
    client_span = finished["weave.ipam.traced request"]
    server_span = finished["weave.ipam.traced process"]
    assert server_span.context.trace_id == client_span.context.trace_id
    assert server_span.parent.span_id == client_span.context.span_id
    assert server_span.attributes["messaging.destination.name"] == "weave.ipam.traced"
    assert server_span.attributes["messaging.system"] == "nats"


async def test_nats_micro_discovery(nats_server):
    bus = await NatsBus.connect(nats_server.url, nats_server.token, "ipam")
    probe = await NatsBus.connect(nats_server.url, nats_server.token, "probe")
    try:
        async def handler(req: Ping) -> Pong:
            return Pong(n=req.n)

        await bus.serve("weave.ipam.discover", Ping, handler)
        await bus.flush()
        msg = await probe.nc.request("$SRV.PING.weave-ipam", b"", timeout=2)
        assert b'"name":"weave-ipam"' in msg.data.replace(b" ", b"")
    finally:
        await bus.close()
        await probe.close()


async def test_concurrent_serving_lets_a_slow_request_wait_without_blocking_others(make_bus):
    server, client = await make_bus("ipam"), await make_bus("cli")
    release = asyncio.Event()

    async def handler(req: Ping) -> Pong:
        if req.n == 0:
            await release.wait()  # an allocation waiting for consensus
        return Pong(n=req.n)

    await server.serve("weave.ipam.conc", Ping, handler, concurrency=4)
    slow = asyncio.ensure_future(client.request("weave.ipam.conc", Ping(n=0), Pong, timeout=5))
    await asyncio.sleep(0.05)
    assert (await client.request("weave.ipam.conc", Ping(n=7), Pong, timeout=2)).n == 7
    assert not slow.done()
    release.set()
    assert (await slow).n == 0


async def test_serial_serving_keeps_order(make_bus):
    server, client = await make_bus("ipam"), await make_bus("cli")
    seen, active, peak = [], [0], [0]

    async def handler(req: Ping) -> Pong:
        active[0] += 1
        peak[0] = max(peak[0], active[0])
        seen.append(req.n)
        await asyncio.sleep(0.001 * (5 - req.n))
        active[0] -= 1
        return Pong(n=req.n)

    await server.serve("weave.ipam.serial", Ping, handler)
    await asyncio.gather(*(client.request("weave.ipam.serial", Ping(n=i), Pong) for i in range(5)))
    assert seen == list(range(5)) and peak[0] == 1, "one at a time, in arrival order"


@pytest.mark.parametrize("concurrency", [1, 4])
async def test_close_lets_handlers_in_hand_answer(make_bus, concurrency):
    """A service that stops answers the requests it is already working on (they were
    cancelled, say) before its connection goes, rather than leaving callers to time out."""
    server, client = await make_bus("ipam"), await make_bus("cli")
    release = asyncio.Event()

    async def handler(req: Ping) -> Pong:
        await release.wait()
        return Pong(n=req.n)

    await server.serve("weave.ipam.closing", Ping, handler, concurrency=concurrency)
    pending = asyncio.ensure_future(client.request("weave.ipam.closing", Ping(n=3), Pong, timeout=5))
    await asyncio.sleep(0.05)
    closing = asyncio.ensure_future(server.close())
    await asyncio.sleep(0.05)
    assert not closing.done(), "close waits for the handler in hand"
    release.set()
    await closing
    assert (await pending).n == 3


async def test_connect_to_a_bus_nobody_serves_gives_up_at_its_timeout():
    """nats-py retries a first connection forever when reconnects are unlimited; our
    connect says `unavailable` at its timeout (a CLI command must not wait for ever)."""
    import socket
    import time

    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(BusError) as err:
        await NatsBus.connect(f"nats://127.0.0.1:{port}", "token", "cli", timeout=1.0)
    assert err.value.code == "unavailable" and f"127.0.0.1:{port}" in str(err.value)
    assert 0.9 <= time.monotonic() - started < 3.0
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []  # nothing left running
