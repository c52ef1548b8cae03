"""An asyncio NATS client for the host's bus: the shell around shared/nats_protocol.py.

Why not nats-py (issue 15): every service forks from the supervisor's preloaded memory,
and whatever code a service runs copies the pages it touches. With nats-py (and
`nats.micro`, JetStream's header names, its parser and option handling) a forked child
copied 4.3 MB of pages to start its loop, connect, serve and answer 20 requests; with
this client 3.5 MB (tests/unit/test_nats_client.py measures it), and nats-py's 1.5 MB
of modules are no longer in the supervisor's preload. It does what one host's bus
needs and no more: a plain TCP connection to loopback with a
token, publish (with headers), subscribe (queue groups), request/reply over one
wildcard inbox with "no responders", flush, drain, a keep-alive PING, and reconnecting
for ever (the supervisor restarts nats-server; services carry on). No TLS, no
JetStream, no cluster discovery.

Delivery as shared/delivery.py gives it (one message at a time per subscription, in
order, a bounded queue). Publishing while the connection is being made again buffers
up to `RECONNECT_BUFFER_BYTES`.
"""
from __future__ import annotations

import asyncio
import logging
import os
from typing import Awaitable, Callable
from urllib.parse import urlsplit

from shared import nats_protocol as proto
from shared.delivery import PENDING_LIMIT, Delivery
from shared.nats_protocol import Msg

log = logging.getLogger(__name__)
VERSION = "weave-py-1"
RECONNECT_BUFFER_BYTES = 8 * 1024 * 1024
PING_INTERVAL_S = 120.0  # nats-py's default keep-alive
DRAIN_TIMEOUT_S = 3.0

Callback = Callable[[Msg], Awaitable[None]]


class NatsError(Exception):
    """The connection failed, was refused, or is closed."""


class NoResponders(NatsError):
    """A request that no subscriber received."""


class Subscription(Delivery):
    """One SUB: its messages delivered as shared/delivery.py says."""

    def __init__(self, client: "NatsClient", sid: int, subject: str, queue: str, callback: Callback,
                 pending_limit: int) -> None:
        super().__init__(subject, callback, pending_limit)
        self._client, self.sid, self.subject, self.queue = client, sid, subject, queue

    async def unsubscribe(self) -> None:
        self._client.unsubscribe(self)


class _Link(asyncio.Protocol):
    """One TCP connection: its parser, the handshake, then events to the client."""

    def __init__(self, client: "NatsClient") -> None:
        loop = asyncio.get_running_loop()
        self.client, self.parser = client, proto.Parser()
        self.info: asyncio.Future[dict] = loop.create_future()
        self.ready: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.writable = asyncio.Event()
        self.writable.set()
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        for event in self.parser.feed(data):
            if not self.ready.done():
                self._handshake(event)
            else:
                self.client._on_event(self, event)

    def _handshake(self, event: proto.Event) -> None:
        if isinstance(event, proto.Info) and not self.info.done():
            self.info.set_result(event.fields)
        elif isinstance(event, proto.Pong):
            self.ready.set_result(None)
        elif isinstance(event, proto.Ping):
            self.transport.write(proto.PONG)
        elif isinstance(event, proto.Error):
            error = NatsError(f"nats-server: {event.text}")
            for fut in (self.info, self.ready):
                if not fut.done():
                    fut.set_exception(error)

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.writable.set()
        for fut in (self.info, self.ready):
            if not fut.done():
                fut.set_exception(NatsError(f"connection lost: {exc or 'closed by the server'}"))
        self.client._on_lost(self)


class NatsClient:
    def __init__(self, host: str, port: int, token: str, name: str, *, connect_timeout: float,
                 reconnect_wait: float, on_error: Callable[[str], None] | None,
                 on_disconnect: Callable[[], None] | None) -> None:
        self.host, self.port, self._token, self.name = host, port, token, name
        self.connect_timeout, self.reconnect_wait = connect_timeout, reconnect_wait
        self._on_error, self._on_disconnect = on_error, on_disconnect
        self.max_payload = 1024 * 1024
        self._link: _Link | None = None
        self._session = proto.Session(f"_INBOX.{os.urandom(11).hex()}.")
        self._subs: dict[int, Subscription] = {}
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._closed = False
        self._reconnecting: asyncio.Task | None = None
        self._keepalive: asyncio.TimerHandle | None = None
        self._replies: dict[str, asyncio.Future[Msg]] = {}

    @classmethod
    async def connect(cls, url: str, token: str, name: str, *, connect_timeout: float = 2.0,
                      reconnect_wait: float = 0.5, on_error: Callable[[str], None] | None = None,
                      on_disconnect: Callable[[], None] | None = None) -> "NatsClient":
        """Connect once (raises OSError, NatsError or asyncio.TimeoutError); afterwards
        the client reconnects by itself for as long as it is open."""
        parts = urlsplit(url)
        if parts.scheme not in ("nats", "tcp") or not parts.hostname:
            raise NatsError(f"not a nats:// URL: {url!r}")
        client = cls(parts.hostname, parts.port or 4222, token, name, connect_timeout=connect_timeout,
                     reconnect_wait=reconnect_wait, on_error=on_error, on_disconnect=on_disconnect)
        await client._open()
        return client

    @property
    def is_closed(self) -> bool:
        return self._closed

    @property
    def is_connected(self) -> bool:
        return self._link is not None

    # -- connection ---------------------------------------------------------------
    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        link = _Link(self)
        transport, _ = await asyncio.wait_for(
            loop.create_connection(lambda: link, self.host, self.port), self.connect_timeout)
        try:
            info = await asyncio.wait_for(link.info, self.connect_timeout)
            self.max_payload = int(info.get("max_payload", self.max_payload))
            transport.write(proto.connect(name=self.name, token=self._token, version=VERSION) + proto.PING)
            await asyncio.wait_for(link.ready, self.connect_timeout)
        except BaseException:
            transport.abort()
            raise
        if self._closed:
            transport.abort()
            raise NatsError("closed while connecting")
        if link.lost:  # (what came with the handshake's PONG may have ended it)
            raise NatsError("connection lost right after the handshake")
        self._established(link)

    def _established(self, link: _Link) -> None:
        """Send what the server must know again (subscriptions, then waiting pings and
        what was published meanwhile), in that order."""
        self._link = link
        link.transport.write(b"".join([self._session.connected(lambda fut: not fut.done()), *self._buffer]))
        self._buffer, self._buffered = [], 0
        self._arm_keepalive()

    def _on_lost(self, link: _Link) -> None:
        if link is not self._link:
            return
        self._link = None
        if self._keepalive is not None:
            self._keepalive.cancel()
        if self._closed:
            return
        if self._on_disconnect is not None:
            self._on_disconnect()
        self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.reconnect_wait)
            try:
                await self._open()
                log.info("bus reconnected to %s:%d", self.host, self.port)
                return
            except (OSError, NatsError, asyncio.TimeoutError):
                continue

    def _arm_keepalive(self) -> None:
        self._keepalive = asyncio.get_running_loop().call_later(PING_INTERVAL_S, self._ping_server)

    def _ping_server(self) -> None:
        link = self._link
        if link is None:
            return
        ping = self._session.keepalive()
        if ping is None:
            log.warning("bus: no PONG to %d pings; connecting again", proto.MAX_PINGS_OUT)
            link.transport.abort()
            return
        link.transport.write(ping)
        self._arm_keepalive()

    def _on_event(self, link: _Link, event: proto.Event) -> None:
        if isinstance(event, Msg):
            self._on_msg(event)
        elif isinstance(event, proto.Ping):
            link.transport.write(proto.PONG)
        elif isinstance(event, proto.Pong):
            fut = self._session.pong()
            if fut is not None and not fut.done():
                fut.set_result(None)
        elif isinstance(event, proto.Info):
            self.max_payload = int(event.fields.get("max_payload", self.max_payload))
        elif isinstance(event, proto.Error):
            if self._on_error is not None:
                self._on_error(event.text)
            if event.fatal:
                link.transport.abort()

    def _on_msg(self, msg: Msg) -> None:
        token = self._session.reply_token(msg)
        if token is not None:
            fut = self._replies.get(token)
            if fut is not None and not fut.done():
                fut.set_result(msg)
            return
        sub = self._subs.get(msg.sid)
        if sub is not None:
            sub.offer(msg)

    def _send(self, data: bytes) -> None:
        if self._closed:
            raise NatsError("the bus connection is closed")
        if self._link is not None:
            self._link.transport.write(data)
            return
        if self._buffered + len(data) > RECONNECT_BUFFER_BYTES:
            raise NatsError("not connected, and the reconnect buffer is full")
        self._buffer.append(data)
        self._buffered += len(data)

    def _send_if_connected(self, data: bytes) -> None:
        """For SUB and UNSUB: a connection made later learns the subscriptions anyway."""
        if self._link is not None:
            self._link.transport.write(data)

    # -- API ----------------------------------------------------------------------
    async def publish(self, subject: str, data: bytes, *, reply: str = "",
                      headers: dict[str, str] | None = None) -> None:
        if not proto.valid_subject(subject):
            raise NatsError(f"invalid subject {subject!r}")
        if len(data) > self.max_payload:
            raise NatsError(f"{len(data)} bytes is more than the server's maximum payload ({self.max_payload})")
        link = self._link
        if link is not None and not link.writable.is_set():
            await link.writable.wait()  # the kernel's buffer is full: wait rather than pile up
        self._send(proto.pub(subject, data, reply=reply, headers=headers))

    async def subscribe(self, subject: str, callback: Callback, *, queue: str = "",
                        pending_limit: int = PENDING_LIMIT) -> Subscription:
        if not proto.valid_subject(subject) or (queue and not proto.valid_subject(queue)):
            raise NatsError(f"invalid subject {subject!r} or queue {queue!r}")
        if self._closed:
            raise NatsError("the bus connection is closed")
        sid, line = self._session.subscribe(subject, queue)
        sub = self._subs[sid] = Subscription(self, sid, subject, queue, callback, pending_limit)
        self._send_if_connected(line)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.pop(sub.sid, None)
        line = self._session.unsubscribe(sub.sid)
        if not self._closed:
            self._send_if_connected(line)
        sub.stop()

    async def request(self, subject: str, data: bytes, *, headers: dict[str, str] | None = None,
                      timeout: float) -> Msg:
        """The first reply; raises NoResponders, or asyncio.TimeoutError."""
        token, reply, inbox_sub = self._session.request()
        self._send_if_connected(inbox_sub)
        fut = self._replies[token] = asyncio.get_running_loop().create_future()
        try:
            await self.publish(subject, data, reply=reply, headers=headers)
            msg = await asyncio.wait_for(fut, timeout)
        finally:
            self._replies.pop(token, None)
        if msg.status == proto.STATUS_NO_RESPONDERS:
            raise NoResponders(f"no responders on {subject}")
        return msg

    async def flush(self, timeout: float = 10.0) -> None:
        """Return once the server has processed everything sent before (a PING's PONG)."""
        fut = asyncio.get_running_loop().create_future()
        self._send_if_connected(self._session.ping(fut))  # (else its PING goes with the next connection)
        await asyncio.wait_for(fut, timeout)

    async def drain(self, timeout: float = DRAIN_TIMEOUT_S,
                    before_close: Callable[[], Awaitable[None]] | None = None) -> None:
        """Unsubscribe everything, let the callbacks finish what arrived (up to
        `timeout`), run `before_close` (work still answering on this connection), close."""
        subs = list(self._subs.values())
        for sub in subs:
            self._subs.pop(sub.sid, None)
            self._send_if_connected(self._session.unsubscribe(sub.sid))
        try:
            if self._link is not None:
                await self.flush(timeout)
            await asyncio.gather(*(sub.idle(timeout) for sub in subs))
        except (asyncio.TimeoutError, NatsError):
            pass
        if before_close is not None:
            await before_close()
        await self.close()
        for sub in subs:
            sub.stop()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for sub in self._subs.values():
            sub.stop()
        self._subs.clear()
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        if self._keepalive is not None:
            self._keepalive.cancel()
        for fut in [*self._session.waiters(), *self._replies.values()]:
            if fut is not None and not fut.done():
                fut.set_exception(NatsError("the bus connection is closed"))
        link, self._link = self._link, None
        if link is not None:
            link.transport.close()
