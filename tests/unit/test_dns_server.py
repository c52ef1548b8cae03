"""The DNS listeners and the upstream client (services/dns/server.py) on real loopback
sockets: forwarding order, timeouts, oversize replies, the in-flight bound, resolv.conf
re-reads, malformed packets, TCP framing and the TCP client bound."""
from __future__ import annotations

import asyncio
import os
import socket
import struct
from pathlib import Path

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from services.dns.config import DnsConfig
from services.dns.entry import DnsEntry
from services.dns.nameserver import Nameserver
from services.dns.query import Forward, QueryHandler
from services.dns.server import DnsServer, ResolvConf, UpstreamClient
from shared.config import DnsSettings
from shared.weave.peer_name import PeerName
from tests.unit.dns_responder import Responder

US = PeerName.parse("aa:00:00:00:00:01")


def forward_of(name: str, tcp: bool = False) -> Forward:
    handler = QueryHandler(Nameserver(US))
    fwd = handler.handle(DNSRecord.question(name).pack(), tcp)
    assert isinstance(fwd, Forward)
    return fwd


def upstream_client(addresses, timeout_s=0.3, max_inflight=8) -> UpstreamClient:
    async def addrs():
        return list(addresses)
    return UpstreamClient(addrs, timeout_s=timeout_s, udp_size=4096, max_inflight=max_inflight)


def dead_port() -> int:
    """A loopback UDP port nobody answers on (bound, never read)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.2", 0))
    dead_port.keep.append(s)
    return s.getsockname()[1]


dead_port.keep = []


async def test_first_answering_server_wins_and_the_reply_keeps_the_client_id():
    async with Responder({"a.example.com.": "192.0.2.1"}) as up:
        fwd = forward_of("a.example.com")
        reply = await upstream_client([("127.0.0.2", dead_port()), (up.host, up.port)]).resolve(fwd)
        parsed = DNSRecord.parse(reply)
        assert parsed.header.id == fwd.query.id and [str(r.rdata) for r in parsed.rr] == ["192.0.2.1"]
        assert up.seen == ["a.example.com."]


async def test_servfail_when_no_server_answers_within_the_timeout():
    async with Responder({}, silent=True) as up:
        loop = asyncio.get_running_loop()
        started = loop.time()
        reply = await upstream_client([(up.host, up.port), (up.host, up.port)], timeout_s=0.2).resolve(forward_of("x.org"))
        assert DNSRecord.parse(reply).header.rcode == RCODE.SERVFAIL
        assert 0.4 <= loop.time() - started < 1.5, "each server gets its own timeout"
        assert up.seen == ["x.org.", "x.org."]
    assert DNSRecord.parse(await upstream_client([]).resolve(forward_of("x.org"))).header.rcode == RCODE.SERVFAIL


async def test_udp_reply_over_4096_bytes_counts_as_failure_but_tcp_carries_it():
    async with Responder({"big.example.com.": "192.0.2.9"}, pad=25) as up:
        reply = await upstream_client([(up.host, up.port)]).resolve(forward_of("big.example.com"))
        assert DNSRecord.parse(reply).header.rcode == RCODE.SERVFAIL
        reply = await upstream_client([(up.host, up.port)]).resolve(forward_of("big.example.com", tcp=True))
        assert len(reply) > 4096 and len(DNSRecord.parse(reply).rr) == 26


async def test_resolv_conf_is_reread_when_it_changes_at_most_every_5_s(tmp_path):
    path = tmp_path / "resolv.conf"
    path.write_text("nameserver 192.0.2.53\nnameserver 10.0.0.53\n")
    clock = [100.0]
    conf = ResolvConf(path, "10.0.0.53", lambda: clock[0], port=5353)
    assert await conf.addresses() == [("192.0.2.53", 5353)], "our own address is left out"
    path.write_text("nameserver 198.51.100.1\n")
    os.utime(path, ns=(1, 1))
    clock[0] += 4.9
    assert conf.servers == ("192.0.2.53",) and await conf.addresses() == [("192.0.2.53", 5353)]
    clock[0] += 0.2
    assert await conf.addresses() == [("198.51.100.1", 5353)]
    path.unlink()
    clock[0] += 10
    assert await conf.addresses() == [("198.51.100.1", 5353)], "a missing file keeps what we had"


@pytest.fixture
async def server():
    ns = Nameserver(US)
    ns.add("web.weave.local.", "c1", 0x0A200001, 1_700_000_000)
    config = DnsConfig(listen_host="127.0.0.1", listen_port=0, domain="weave.local.", ttl_s=1,
                       settings=DnsSettings(resolv_conf=Path(os.devnull), max_forwards=1, max_tcp_clients=2,
                                            tcp_idle_timeout_s=0.5))
    async with Responder({"slow.example.com.": "192.0.2.2"}, silent=True) as up:
        srv = DnsServer(QueryHandler(ns), upstream_client([(up.host, up.port)], timeout_s=0.5, max_inflight=1), config)
        await srv.start()
        yield srv
        await srv.stop()


def udp_exchange(port: int, payload: bytes, timeout: float = 1.0) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(payload, ("127.0.0.1", port))
        try:
            return s.recv(65535)
        except socket.timeout:
            return None


async def test_malformed_packets_get_formerr_or_nothing(server):
    port = server.port
    short = await asyncio.to_thread(udp_exchange, port, b"\x12\x34\x01", 0.3)
    assert short is None, "no header: dropped"
    header_only = struct.pack("!HHHHHH", 0xBEEF, 0x0100, 1, 0, 0, 0)  # one question promised, none sent
    reply = await asyncio.to_thread(udp_exchange, port, header_only + b"\x03ab")
    assert reply is not None and reply[:2] == b"\xbe\xef" and reply[3] & 0x0F == RCODE.FORMERR
    ok = DNSRecord.parse(await asyncio.to_thread(udp_exchange, port, DNSRecord.question("web.weave.local").pack()))
    assert [str(r.rdata) for r in ok.rr] == ["10.32.0.1"], "still answering after garbage"


async def test_forwards_beyond_the_bound_get_servfail_at_once(server):
    loop = asyncio.get_running_loop()
    first = loop.run_in_executor(None, udp_exchange, server.port, DNSRecord.question("slow.example.com").pack(), 2.0)
    await asyncio.sleep(0.1)
    started = loop.time()
    second = await asyncio.to_thread(udp_exchange, server.port, DNSRecord.question("other.example.com").pack())
    assert DNSRecord.parse(second).header.rcode == RCODE.SERVFAIL and loop.time() - started < 0.3
    assert server.overloaded == 1
    assert DNSRecord.parse(await first).header.rcode == RCODE.SERVFAIL, "the slow one times out upstream"


async def test_tcp_serves_several_queries_per_connection_and_bounds_clients(server):
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    for name, qtype in (("web.weave.local", "A"), ("web.weave.local", "MX"), ("nope.weave.local", "A")):
        q = DNSRecord.question(name, qtype).pack()
        writer.write(struct.pack("!H", len(q)) + q)
        (size,) = struct.unpack("!H", await reader.readexactly(2))
        reply = DNSRecord.parse(await reader.readexactly(size))
        assert reply.q.qtype == getattr(QTYPE, qtype)
    assert reply.header.rcode == RCODE.NXDOMAIN
    second = await asyncio.open_connection("127.0.0.1", server.port)
    third_reader, third_writer = await asyncio.open_connection("127.0.0.1", server.port)
    assert await third_reader.read() == b"", "over max_tcp_clients: closed on accept"
    assert await asyncio.wait_for(reader.read(), 2.0) == b"", "idle clients are dropped"
    for w in (writer, second[1], third_writer):
        w.close()


class _FullSendBuffer:
    """The listener's socket as it is when the kernel cannot take a reply (EAGAIN)."""

    def __init__(self, sock) -> None:
        self.sock = sock

    def __getattr__(self, name):
        return getattr(self.sock, name)

    def sendto(self, data, addr):
        raise BlockingIOError(11, "Resource temporarily unavailable")


async def test_udp_replies_are_dropped_while_the_send_buffer_is_full(server):
    real = server.udp.sock
    server.udp.sock = _FullSendBuffer(real)
    assert await asyncio.to_thread(udp_exchange, server.port, DNSRecord.question("web.weave.local").pack(),
                                   0.3) is None
    assert server.dropped == 1
    server.udp.sock = real
    assert await asyncio.to_thread(udp_exchange, server.port, DNSRecord.question("web.weave.local").pack())


async def test_many_queries_in_one_wake_up_are_all_answered(server):
    """The listener drains the socket: a burst of 200 queries sent before it reads gets
    200 answers (several wake-ups of UDP_BATCH each)."""
    def burst() -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            s.settimeout(2.0)
            for i in range(200):
                q = DNSRecord.question("web.weave.local")
                q.header.id = i
                s.sendto(q.pack(), ("127.0.0.1", server.port))
            ids = set()
            try:
                while len(ids) < 200:
                    ids.add(DNSRecord.parse(s.recv(4096)).header.id)
            except socket.timeout:
                pass
            return len(ids)
    assert await asyncio.to_thread(burst) == 200


def test_reply_truncation_is_the_handlers_job():
    """A sanity check of the contract the UDP listener relies on: 60 addresses do not fit
    in 512 bytes, so the handler cuts the answer and sets TC."""
    ns = Nameserver(US)
    for i in range(60):
        ns.merge([DnsEntry(f"c{i}", US, 0x0A000000 + i, "many.weave.local.")])
    reply = QueryHandler(ns).handle(DNSRecord.question("many.weave.local").pack())
    parsed = DNSRecord.parse(reply)
    assert len(reply) <= 512 and parsed.header.tc == 1 and 0 < len(parsed.rr) < 60
