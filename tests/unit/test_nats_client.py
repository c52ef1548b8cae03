"""shared/nats_client.py against a real nats-server: publish and subscribe with headers,
queue groups, request/reply with "no responders" and timeouts, a refused token, a slow
consumer, reconnecting after the server restarts (and what was published meanwhile),
a server that talks garbage; and what the client costs a forked service in copied
pages (issue 15)."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest

from shared.nats_client import NatsClient, NatsError, NoResponders
from weavectl.nats_process import LocalNatsServer
from weavectl.stack_files import STACK_PYTHON_FLAGS

@pytest.fixture
def server(tmp_path):
    """A nats-server of the test's own, which it may stop and start again on one port."""
    srv = LocalNatsServer(tmp_path).start()
    yield srv
    srv.stop()


async def _client(srv: LocalNatsServer, name: str = "test", **kw) -> NatsClient:
    return await NatsClient.connect(srv.url, srv.token, name, reconnect_wait=0.05, **kw)


async def _until(predicate, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_publish_and_subscribe_with_headers_and_a_queue_group(server):
    a, b = await _client(server, "a"), await _client(server, "b")
    got: list = []
    grouped: list = []

    async def collect(msg):
        got.append(msg)

    try:
        await a.subscribe("weave.t.>", collect)
        for tag in ("x", "y"):
            async def member(msg, tag=tag):
                grouped.append(tag)
            await a.subscribe("weave.g", member, queue="q")
        await a.flush()
        await b.publish("weave.t.one", b"plain")
        await b.publish("weave.t.two", b"headed", headers={"traceparent": "00-abc-01"})
        for _ in range(20):
            await b.publish("weave.g", b"")
        await _until(lambda: len(got) == 2 and len(grouped) == 20)
        assert [(m.subject, m.data, m.headers) for m in got] == [
            ("weave.t.one", b"plain", {}), ("weave.t.two", b"headed", {"traceparent": "00-abc-01"})]
        assert set(grouped) <= {"x", "y"}  # each message to one member of the group
    finally:
        await a.close()
        await b.close()


async def test_request_reply_no_responders_and_timeout(server):
    a, b = await _client(server, "a"), await _client(server, "b")

    async def echo(msg):
        await a.publish(msg.reply, msg.data.upper())

    async def silent(msg):
        pass

    try:
        await a.subscribe("weave.echo", echo)
        await a.subscribe("weave.silent", silent)
        await a.flush()
        replies = await asyncio.gather(*(b.request("weave.echo", b"hi %d" % i, timeout=2) for i in range(50)))
        assert [r.data for r in replies] == [b"HI %d" % i for i in range(50)]  # each to its own caller
        started = time.monotonic()
        with pytest.raises(NoResponders):
            await b.request("weave.nobody", b"", timeout=5)
        assert time.monotonic() - started < 1.0  # the server says so at once
        with pytest.raises(asyncio.TimeoutError):
            await b.request("weave.silent", b"", timeout=0.2)
    finally:
        await a.close()
        await b.close()


async def test_a_wrong_token_is_refused(server):
    with pytest.raises(NatsError, match="(?i)authorization"):
        await NatsClient.connect(server.url, "wrong", "intruder", connect_timeout=2)


async def test_bad_arguments_are_refused_before_anything_is_sent(server):
    c = await _client(server)
    try:
        with pytest.raises(NatsError, match="invalid subject"):
            await c.publish("has space", b"")
        with pytest.raises(NatsError, match="maximum payload"):
            await c.publish("weave.big", b"x" * (c.max_payload + 1))
        await c.flush()  # and the connection is still fine
    finally:
        await c.close()
    with pytest.raises(NatsError, match="closed"):
        await c.publish("weave.a", b"")


async def test_a_slow_consumer_drops_what_is_past_its_limit(server):
    a, b = await _client(server, "a"), await _client(server, "b")
    release = asyncio.Event()
    handled: list = []

    async def slow(msg):
        await release.wait()
        handled.append(msg.data)

    try:
        sub = await a.subscribe("weave.slow", slow, pending_limit=3)
        await a.flush()
        for i in range(10):
            await b.publish("weave.slow", b"%d" % i)
        await b.flush()
        await a.flush()  # (its PONG comes after the messages the server had for it)
        release.set()
        await _until(lambda: len(handled) + sub.dropped == 10)
        assert 3 <= len(handled) <= 4 and sub.dropped >= 6  # at most the limit waited, besides one in hand
        # the first three always waited; a fourth is whichever arrived once the task took one in hand
        # (the server may hand over several in one read, before the task first runs)
        numbers = [int(d) for d in handled]
        assert numbers[:3] == [0, 1, 2] and numbers == sorted(set(numbers))  # in order; the rest counted
    finally:
        await a.close()
        await b.close()


async def test_reconnects_after_the_server_restarts_and_sends_what_waited(server):
    disconnects: list = []
    c = await _client(server, on_disconnect=lambda: disconnects.append(1))
    got: list = []

    async def collect(msg):
        got.append(msg.data)

    try:
        await c.subscribe("weave.r", collect)
        await c.flush()
        server.stop()
        await _until(lambda: not c.is_connected)
        await c.publish("weave.r", b"while down")  # buffered until the connection is back
        server.start()
        await _until(lambda: c.is_connected)
        await c.publish("weave.r", b"after")
        await _until(lambda: got == [b"while down", b"after"])
        assert disconnects == [1]
    finally:
        await c.close()


async def test_a_server_that_talks_garbage_is_dropped_and_connected_again():
    """A fake server: a proper handshake, then garbage on the first connection; the
    client drops that connection and makes a new one, answering the server's PING.
    (Garbage arriving with the handshake itself fails the connect: NatsError.)"""
    connections: list = []

    async def serve(reader, writer):
        connections.append(writer)
        writer.write(b'INFO {"max_payload":1024}\r\n')
        line = await reader.readline()
        assert line.startswith(b"CONNECT ")
        assert await reader.readline() == b"PING\r\n"
        writer.write(b"PONG\r\n")
        if len(connections) == 1:
            assert await reader.readline() == b"SUB weave.ok 1\r\n"
            writer.write(b"NONSENSE\r\n")
        else:
            writer.write(b"PING\r\n")
            lines = [await reader.readline() for _ in range(2)]
            assert sorted(lines) == [b"PONG\r\n", b"SUB weave.ok 1\r\n"]  # the answer; its subscription again
            writer.write(b"MSG weave.ok 1 2\r\nok\r\n")
        await writer.drain()
        await reader.read()  # until the client goes

    srv = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    got: list = []

    async def collect(msg):
        got.append(msg.data)

    c = await NatsClient.connect(f"nats://127.0.0.1:{port}", "", "t", reconnect_wait=0.05)
    try:
        await c.subscribe("weave.ok", collect)
        await _until(lambda: got == [b"ok"])
        assert len(connections) == 2 and c.max_payload == 1024
    finally:
        await c.close()
        srv.close()


PAGES_PROBE = """
import asyncio, importlib, os, sys
from weavectl import compiled_once, preload
from weavectl.services import SERVICE_MODULES
compiled_once.install()
importlib.import_module("weavectl.supervisor")
preload.load([SERVICE_MODULES[s] for s in ("gossip", "ipam", "dns", "datapath", "npc")])
from weavectl import forkserver
from shared.nats_bus import NatsBus
from shared.schemas import HealthReply, HealthRequest

def private_kib():
    for line in open("/proc/self/smaps_rollup"):
        if line.startswith("Private_Dirty"):
            return int(line.split()[1])

async def work():
    bus = await NatsBus.connect(sys.argv[1], sys.argv[2], "probe", timeout=5)
    async def health(req):
        return HealthReply(service="probe", pid=1, healthy=True, detail="", uptime_s=0.0, metrics_port=0)
    await bus.serve("weave.probe.health", HealthRequest, health)
    for _ in range(20):
        await bus.nc.request("weave.probe.health", b"{}", timeout=2)
    copied = private_kib()
    await bus.close()
    return copied

pid = os.fork()
if pid == 0:
    forkserver._leave_the_supervisor()  # (descriptors past stderr now lead nowhere; stdout is kept)
    before = private_kib()
    os.write(1, str(asyncio.run(work()) - before).encode())
    os._exit(0)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_what_a_forked_service_copies_to_use_the_bus(server):
    """Starting an event loop, connecting, serving and answering 20 requests in a
    service forked from the supervisor's preloaded memory copied 4.27-4.34 MB of its
    pages with nats-py and nats.micro, 3.46 MB with this client (our BusCore around
    both). The bound sits between, so that a heavier client shows."""
    out = subprocess.run([sys.executable, *STACK_PYTHON_FLAGS, "-c", PAGES_PROBE, server.url, server.token],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    copied_kib = int(out.stdout.strip())
    assert 0 < copied_kib < 3900, copied_kib
