"""`NatsBus`: the Bus protocol over the host's nats-server (shared/nats_client.py).

Request endpoints answer in the queue group `q`, and each process answers NATS's
service discovery (`$SRV.PING|INFO|STATS`, optionally `.weave-<service>[.<id>]`) as a
`nats.micro` service named `weave-<service>` does, so `nats micro ls` lists the host's
services. The client reconnects for ever: the supervisor restarts nats-server if it
dies, and every service carries on without a restart of its own (no start-order
coupling).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from datetime import datetime, timezone
from typing import Awaitable, Callable

from shared.bus import BusCore, BusError, BusMsg, Handler, M, Subscription
from shared.nats_client import NatsClient, NatsError, NoResponders
from shared.nats_protocol import Msg
from shared.schemas.base import Message

log = logging.getLogger(__name__)
SERVICE_VERSION = "0.1.0"
CONNECT_RETRY_S = 0.2
QUEUE_GROUP = "q"  # nats.micro's default for endpoints
DISCOVERY_VERBS = ("PING", "INFO", "STATS")


class NatsBus(BusCore):
    def __init__(self, nc: NatsClient, service: str) -> None:
        super().__init__(service)
        self.nc = nc
        self._discovery: _Discovery | None = None

    @classmethod
    async def connect(cls, url: str, token: str, service: str, *, timeout: float = 10.0) -> "NatsBus":
        """Connect, retrying until `timeout` while the server is not up yet. (Once
        connected, the client reconnects by itself; the first connection is bounded
        here, so that a CLI command whose host's nats-server is down says so.)"""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                nc = await NatsClient.connect(url, token, f"weave-{service}", connect_timeout=min(2.0, timeout),
                                              reconnect_wait=0.5, on_error=_log_error,
                                              on_disconnect=_log_disconnect)
                return cls(nc, service)
            except (OSError, NatsError, asyncio.TimeoutError) as exc:
                if loop.time() >= deadline:
                    why = str(exc) or f"nothing answered within {timeout:g} s"
                    raise BusError("unavailable", f"cannot reach the bus at {url}: {why}") from exc
                await asyncio.sleep(CONNECT_RETRY_S)

    async def _raw_publish(self, subject: str, data: bytes, headers: dict[str, str]) -> None:
        await self.nc.publish(subject, data, headers=headers or None)

    async def _raw_request(self, subject: str, data: bytes, headers: dict[str, str], timeout: float) -> bytes:
        try:
            msg = await self.nc.request(subject, data, timeout=timeout, headers=headers or None)
        except NoResponders:
            raise BusError("unavailable", f"no service answers {subject}", subject=subject) from None
        except asyncio.TimeoutError:
            raise BusError("timeout", f"no reply within {timeout:g} s", subject=subject) from None
        return msg.data

    async def subscribe(self, subject: str, handler: Handler, *, queue: str | None = None) -> Subscription:
        async def on_msg(msg: Msg) -> None:
            await self.deliver(handler, BusMsg(msg.subject, msg.data, msg.headers, msg.reply or None))

        sub = await self.nc.subscribe(subject, on_msg, queue=queue or "")
        await self.flush()
        return sub

    async def serve(self, subject: str, request_type: type[M], handler: Callable[[M], Awaitable[Message]], *,
                    concurrency: int = 1) -> None:
        if self._discovery is None:
            self._discovery = _Discovery(self.nc, f"weave-{self.service}", f"weave-py {self.service} service")
            await self._discovery.start()
        slots = self._concurrency(concurrency)
        stats = self._discovery.endpoint(subject, QUEUE_GROUP)

        async def answer(msg: Msg) -> None:
            started = time.perf_counter_ns()
            reply = await self.handle_request(msg.subject, msg.data, msg.headers, request_type, handler)
            stats.count(time.perf_counter_ns() - started)
            if msg.reply:
                await self.nc.publish(msg.reply, reply)

        async def on_request(msg: Msg) -> None:
            await slots.run(lambda: answer(msg))

        await self.nc.subscribe(subject, on_request, queue=QUEUE_GROUP)
        await self.flush()

    async def flush(self) -> None:
        """Return once the server has processed everything sent so far: after
        subscribe() and serve() return, the interest is registered, and a request sent
        next finds its responder."""
        await self.nc.flush()

    async def close(self) -> None:
        """No new messages; those received, and requests in hand, may still be answered
        (for up to a few seconds), then the connection closes."""
        if not self.nc.is_closed:
            await self.nc.drain(before_close=self._drain_handlers)


class _EndpointStats:
    def __init__(self, subject: str, queue: str) -> None:
        self.name, self.subject, self.queue = subject.replace(".", "_"), subject, queue
        self.requests, self.processing_ns = 0, 0

    def count(self, ns: int) -> None:
        self.requests += 1
        self.processing_ns += ns

    def info(self) -> dict:
        return {"name": self.name, "subject": self.subject, "queue_group": self.queue, "metadata": None}

    def stats(self) -> dict:
        return {**self.info(), "num_requests": self.requests, "num_errors": 0, "last_error": "",
                "processing_time": self.processing_ns,
                "average_processing_time": self.processing_ns // self.requests if self.requests else 0}


class _Discovery:
    """NATS service discovery for this process, as nats.micro answers it (the
    io.nats.micro.v1 ping, info and stats responses)."""

    def __init__(self, nc: NatsClient, name: str, description: str) -> None:
        self.nc, self.name, self.description = nc, name, description
        self.id = os.urandom(11).hex()
        self.started = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
        self.endpoints: list[_EndpointStats] = []

    def endpoint(self, subject: str, queue: str) -> _EndpointStats:
        stats = _EndpointStats(subject, queue)
        self.endpoints.append(stats)
        return stats

    async def start(self) -> None:
        for verb in DISCOVERY_VERBS:
            for subject in (f"$SRV.{verb}", f"$SRV.{verb}.{self.name}", f"$SRV.{verb}.{self.name}.{self.id}"):
                await self.nc.subscribe(subject, self._answer)

    async def _answer(self, msg: Msg) -> None:
        if not msg.reply:
            return
        verb = msg.subject.split(".")[1]
        body = {"name": self.name, "id": self.id, "version": SERVICE_VERSION, "metadata": {},
                "type": f"io.nats.micro.v1.{verb.lower()}_response"}
        if verb == "INFO":
            body.update(description=self.description, endpoints=[e.info() for e in self.endpoints])
        elif verb == "STATS":
            body.update(started=self.started, endpoints=[e.stats() for e in self.endpoints])
        await self.nc.publish(msg.reply, json.dumps(body).encode())


def _log_error(text: str) -> None:
    log.warning("bus error: %s", text)


def _log_disconnect() -> None:
    log.info("bus disconnected; reconnecting")
