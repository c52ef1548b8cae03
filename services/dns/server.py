"""weaveDNS on the wire (asyncio shell): UDP and TCP listeners that drive the sans-I/O
`QueryHandler` with the process's own store, and the upstream client for names we do
not own (weave:nameserver/dns.go `DNSServer`).

Contracts:
- A query is answered in the datagram callback, from memory: no bus, no await. Only a
  `Forward` leaves the callback, as a task, and at most `max_forwards` of those run at
  once; past that the query gets SERVFAIL at once. With the kernel's socket buffers that
  bounds what a flood can make us hold.
- UDP replies are dropped while the transport's send buffer is over its high-water mark
  (asyncio calls `pause_writing`), so a client that does not read cannot grow our memory.
- Upstream servers are asked in resolv.conf order over the client's transport (UDP, or
  TCP for a TCP client, as Weave's two miekg clients), each with its own timeout; the
  first reply wins; SERVFAIL when none gives one. A UDP reply over `upstream_udp_size`
  bytes counts as a failure (Go's read into a 4096-byte buffer could not parse it).
- TCP: at most `max_tcp_clients` connections; each is served one query at a time and
  dropped after `tcp_idle_timeout_s` of silence.
"""
from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import struct
from pathlib import Path
from typing import Awaitable, Callable

from services.dns.config import DnsConfig
from services.dns.query import Forward, QueryHandler
from services.dns.upstream import Upstream

log = logging.getLogger("weave.dns.server")
_LEN = struct.Struct("!H")
UDP_BATCH = 64
"""Datagrams handled per wake-up of the UDP socket before yielding to other work."""


class ResolvConf:
    """The upstream servers of a resolv.conf file, re-read when it changes (at most one
    stat every 5 s, through the `Upstream` core). A missing or unreadable file keeps
    the servers we had."""

    def __init__(self, path: Path, exclude: str | None, monotonic: Callable[[], float], port: int = 53) -> None:
        self.path, self.port = path, port
        self.state = Upstream(exclude=exclude)
        self._monotonic = monotonic

    @property
    def servers(self) -> tuple[str, ...]:
        return self.state.config.servers

    async def addresses(self) -> list[tuple[str, int]]:
        if self.state.check_due(self._monotonic()):
            await asyncio.to_thread(self._reload)
        return [(server, self.port) for server in self.state.config.servers]

    def _reload(self) -> None:
        try:
            mtime = os.stat(self.path).st_mtime_ns
            if self.state.changed(mtime):
                self.state.load(mtime, self.path.read_text(errors="replace"))
                log.info("upstream servers from %s: %s", self.path, ", ".join(self.servers) or "none")
        except OSError as exc:
            log.debug("cannot read %s: %s", self.path, exc)


Addresses = Callable[[], Awaitable[list[tuple[str, int]]]]


class UpstreamClient:
    """Asks upstream servers on behalf of clients (see the module contracts)."""

    def __init__(self, addresses: Addresses, *, timeout_s: float, udp_size: int, max_inflight: int,
                 rng: random.Random | None = None) -> None:
        self._addresses = addresses
        self.timeout_s, self.udp_size, self.max_inflight = timeout_s, udp_size, max_inflight
        self.inflight = 0
        self._rng = rng or random.SystemRandom()

    def try_acquire(self) -> bool:
        """Take a slot for one forward; False when all are taken."""
        if self.inflight >= self.max_inflight:
            return False
        self.inflight += 1
        return True

    def release(self) -> None:
        self.inflight -= 1

    async def resolve(self, fwd: Forward) -> bytes:
        """The first upstream answer, readdressed to the client, or SERVFAIL."""
        for address in await self._addresses():
            qid = self._rng.getrandbits(16)
            try:
                async with asyncio.timeout(self.timeout_s):
                    raw = await (self._tcp if fwd.tcp else self._udp)(fwd.upstream_request(qid), address, qid)
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                log.debug("upstream %s:%d failed: %s", *address, exc or type(exc).__name__)
                continue
            reply = fwd.client_reply(raw, qid) if raw is not None else None
            if reply is not None:
                return reply
        return fwd.servfail()

    async def _udp(self, request: bytes, address: tuple[str, int], qid: int) -> bytes | None:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.connect(address)  # the kernel then drops datagrams from anyone else
            await loop.sock_sendall(sock, request)
            while True:
                data = await loop.sock_recv(sock, self.udp_size + 1)
                if len(data) > self.udp_size:
                    return None
                if data[:2] == _LEN.pack(qid):
                    return data

    async def _tcp(self, request: bytes, address: tuple[str, int], qid: int) -> bytes | None:
        reader, writer = await asyncio.open_connection(*address)
        try:
            writer.write(_LEN.pack(len(request)) + request)
            await writer.drain()
            (size,) = _LEN.unpack(await reader.readexactly(2))
            return await reader.readexactly(size)
        finally:
            writer.close()


class _UdpListener:
    """The UDP side: a non-blocking socket read in the event loop's reader callback,
    draining up to UDP_BATCH datagrams per wake-up (asyncio's datagram transport reads
    one per wake-up; a query costs a few microseconds, an epoll round trip as much
    again). A reply the kernel cannot take now (EAGAIN: the send buffer is full) is
    dropped and counted: a client that does not read cannot grow our memory."""

    def __init__(self, server: "DnsServer", sock: socket.socket) -> None:
        self.server, self.sock = server, sock
        self.closed = False

    def start(self) -> None:
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._read_ready)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.sock.close()

    def _read_ready(self) -> None:
        server, recv, handle = self.server, self.sock.recvfrom, self.server.handler.handle
        for _ in range(UDP_BATCH):
            try:
                data, addr = recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. ICMP errors surfacing on the socket
                log.debug("UDP error: %s", exc)
                return
            server.queries += 1
            result = handle(data, False)
            if result is None:
                continue
            if result.__class__ is bytes:
                self.send(result, addr)
            else:
                server.forward(result, lambda reply, addr=addr: self.send(reply, addr))

    def send(self, reply: bytes, addr) -> None:
        if self.closed:
            self.server.dropped += 1
            return
        try:
            self.sock.sendto(reply, addr)
        except (BlockingIOError, InterruptedError):
            self.server.dropped += 1
        except OSError as exc:
            log.debug("UDP send to %s failed: %s", addr, exc)


def _udp_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class DnsServer:
    """UDP and TCP listeners on one address, answering from `handler`."""

    def __init__(self, handler: QueryHandler, upstream: UpstreamClient, config: DnsConfig) -> None:
        self.handler, self.upstream, self.config = handler, upstream, config
        self.port = config.listen_port
        self.queries = 0  # UDP and TCP queries received
        self.dropped = 0  # replies not sent: send buffer full
        self.overloaded = 0  # forwards refused (SERVFAIL) because max_forwards were in flight
        self._tasks: set[asyncio.Task] = set()
        self._tcp_clients = 0

    async def start(self) -> None:
        """Bind UDP, then TCP on the same port (the UDP one when port 0 was asked for;
        then a TCP port already taken means another try with a new UDP port)."""
        host = self.config.listen_host
        for attempt in range(1 if self.config.listen_port else 20):
            sock = _udp_socket(host, self.config.listen_port)
            self.port = sock.getsockname()[1]
            try:
                self._tcp = await asyncio.start_server(self._on_tcp, host, self.port, reuse_address=True)
                break
            except OSError:
                sock.close()
                if self.config.listen_port or attempt == 19:
                    raise
        self.udp = _UdpListener(self, sock)
        self.udp.start()
        log.info("DNS listening on %s:%d (UDP and TCP)", host, self.port)

    async def stop(self) -> None:
        self.udp.close()
        self._tcp.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def forward(self, fwd: Forward, send: Callable[[bytes], None]) -> None:
        """Resolve `fwd` upstream in a task and hand the reply to `send`."""
        if not self.upstream.try_acquire():
            self.overloaded += 1
            send(fwd.servfail())
            return
        task = asyncio.get_running_loop().create_task(self._forward(fwd, send))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _forward(self, fwd: Forward, send: Callable[[bytes], None]) -> None:
        try:
            send(await self.upstream.resolve(fwd))
        finally:
            self.upstream.release()

    async def _on_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._tcp_clients >= self.config.settings.max_tcp_clients:
            writer.close()
            return
        self._tcp_clients += 1
        try:
            while await self._serve_one_tcp(reader, writer):
                pass
        except (ConnectionError, OSError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            self._tcp_clients -= 1
            writer.close()

    async def _serve_one_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Read, answer and write one length-prefixed query; False to close the
        connection (IncompleteReadError at EOF)."""
        async with asyncio.timeout(self.config.settings.tcp_idle_timeout_s):
            head = await reader.readexactly(2)
            query = await reader.readexactly(_LEN.unpack(head)[0])
        self.queries += 1
        result = self.handler.handle(query, True)
        if result is None:
            return False  # miekg closes a TCP connection it cannot answer
        if isinstance(result, Forward):
            if not self.upstream.try_acquire():
                self.overloaded += 1
                result = result.servfail()
            else:
                try:
                    result = await self.upstream.resolve(result)
                finally:
                    self.upstream.release()
        writer.write(_LEN.pack(len(result)) + result)
        async with asyncio.timeout(self.config.settings.tcp_idle_timeout_s):
            await writer.drain()
        return True
