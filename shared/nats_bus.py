"""`NatsBus`: the Bus protocol over nats-py, against the host's nats-server.

Request endpoints go through `nats.micro`, one micro service per process named
`weave-<service>`, so `nats micro ls` / `$SRV.PING` list the host's services. The
client reconnects forever: the supervisor restarts nats-server if it dies, and every
service carries on without a restart of its own (no start-order coupling).
"""
from __future__ import annotations

import asyncio
import logging
import sys
from typing import Awaitable, Callable


def _import_nats_without_aiohttp() -> None:
    """nats-py imports aiohttp for its websocket transport (a seventh of a second of CPU
    and ~4 MB per process); the bus is plain TCP to the host's nats-server, so nats is
    imported with aiohttp hidden, unless this process already has aiohttp (the Scope
    pair), which then serves both. aiohttp stays importable afterwards."""
    if "aiohttp" in sys.modules or "nats.aio.transport" in sys.modules:
        return
    sys.modules["aiohttp"] = None  # type: ignore[assignment]  # `import aiohttp` raises ImportError
    try:
        import nats.aio.transport  # noqa: F401
    finally:
        del sys.modules["aiohttp"]


_import_nats_without_aiohttp()

import nats  # noqa: E402
import nats.errors  # noqa: E402
import nats.micro  # noqa: E402
from nats.aio.client import Client  # noqa: E402
from nats.aio.msg import Msg  # noqa: E402

from shared.bus import BusCore, BusError, BusMsg, Handler, M, Subscription  # noqa: E402
from shared.schemas.base import Message  # noqa: E402

log = logging.getLogger(__name__)
SERVICE_VERSION = "0.1.0"
CONNECT_RETRY_S = 0.2


class NatsBus(BusCore):
    def __init__(self, nc: Client, service: str) -> None:
        super().__init__(service)
        self.nc = nc
        self._micro: nats.micro.Service | None = None
        self._subs: list = []

    @classmethod
    async def connect(cls, url: str, token: str, service: str, *, timeout: float = 10.0) -> "NatsBus":
        """Connect, retrying until `timeout` while the server is not up yet. (nats-py itself
        retries a first connection forever when reconnects are unlimited, so the attempt
        is bounded here: without it a CLI command whose host's nats-server was down
        waited for ever instead of saying so.)"""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                nc = await asyncio.wait_for(
                    nats.connect(url, token=token, name=f"weave-{service}", max_reconnect_attempts=-1,
                                 reconnect_time_wait=0.5, connect_timeout=2, allow_reconnect=True,
                                 error_cb=_log_error, disconnected_cb=_log_disconnect),
                    max(deadline - loop.time(), 0.05))
                return cls(nc, service)
            except (OSError, nats.errors.Error, asyncio.TimeoutError) as exc:
                if loop.time() >= deadline:
                    why = str(exc) or f"nothing answered within {timeout:g} s"
                    raise BusError("unavailable", f"cannot reach the bus at {url}: {why}") from exc
                await asyncio.sleep(CONNECT_RETRY_S)

    async def _raw_publish(self, subject: str, data: bytes, headers: dict[str, str]) -> None:
        await self.nc.publish(subject, data, headers=headers or None)

    async def _raw_request(self, subject: str, data: bytes, headers: dict[str, str], timeout: float) -> bytes:
        try:
            msg = await self.nc.request(subject, data, timeout=timeout, headers=headers or None)
        except nats.errors.NoRespondersError:
            raise BusError("unavailable", f"no service answers {subject}", subject=subject) from None
        except nats.errors.TimeoutError:
            raise BusError("timeout", f"no reply within {timeout:g} s", subject=subject) from None
        return msg.data

    async def subscribe(self, subject: str, handler: Handler, *, queue: str | None = None) -> Subscription:
        async def on_msg(msg: Msg) -> None:
            await self.deliver(handler, BusMsg(msg.subject, msg.data, dict(msg.headers or {}), msg.reply or None))

        sub = await self.nc.subscribe(subject, queue=queue or "", cb=on_msg)
        self._subs.append(sub)
        await self.flush()
        return sub

    async def serve(self, subject: str, request_type: type[M], handler: Callable[[M], Awaitable[Message]], *,
                    concurrency: int = 1) -> None:
        if self._micro is None:
            self._micro = await nats.micro.add_service(
                self.nc, name=f"weave-{self.service}", version=SERVICE_VERSION,
                description=f"weave-py {self.service} service")

        slots = self._concurrency(concurrency)

        async def answer(req: nats.micro.Request) -> None:
            reply = await self.handle_request(req.subject, req.data, req.headers, request_type, handler)
            await req.respond(reply)

        async def on_request(req: nats.micro.Request) -> None:
            await slots.run(lambda: answer(req))

        await self._micro.add_endpoint(name=subject.replace(".", "_"), subject=subject, handler=on_request)
        await self.flush()

    async def flush(self) -> None:
        """Return once the server has processed everything sent so far.

        nats-py's own flush() writes its PING straight to the socket, ahead of commands
        still in its pending buffer, so it can return before a SUB reached the server.
        Pushing the buffer out first keeps the order. After subscribe() and serve()
        return, the interest is registered: a request sent next finds its responder.
        """
        await self.nc._flush_pending(force_flush=True)
        await self.nc.flush()

    async def close(self) -> None:
        if self._micro is not None:
            await self._micro.stop()  # no new requests; those in hand may still answer
        await self._drain_handlers()
        if not self.nc.is_closed:
            await self.nc.drain()


async def _log_error(exc: Exception) -> None:
    log.warning("bus error: %s", exc)


async def _log_disconnect() -> None:
    log.info("bus disconnected; reconnecting")
