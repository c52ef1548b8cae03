"""`NatsBus`: the Bus protocol over nats-py, against the host's nats-server.

Request endpoints go through `nats.micro`, one micro service per process named
`weave-<service>`, so `nats micro ls` / `$SRV.PING` list the host's services. The
client reconnects forever: the supervisor restarts nats-server if it dies, and every
service carries on without a restart of its own (no start-order coupling).
"""
from __future__ import annotations

import asyncio
import importlib
import importlib.util
import logging
import sys
from pathlib import Path
from typing import Awaitable, Callable

from shared.imports import bare_package


def _import_nats_lean() -> None:
    """nats-py imports, at its top, parts of itself and of the standard library that a
    TCP bus client never runs; they are left out unless this process has them already:
    - aiohttp, for its websocket transport (a seventh of a second of CPU and ~4 MB per
      process; the Scope pair imports aiohttp anyway, and then it serves both);
    - its JetStream client `nats.js` (and email.parser with it: 1.5 MB, ~25 ms), of
      which the core client reads only `nats.js.api` (header names): the package is
      registered bare (shared/imports.py) and completes itself on first use;
    - importlib.metadata, to look up its own version for the CONNECT line (1.1 MB, a
      scan of every installed distribution): read from its dist-info directory's name.
    aiohttp and importlib.metadata stay importable afterwards."""
    if "nats.aio.client" in sys.modules:
        return
    spec = importlib.util.find_spec("nats")
    package = Path(spec.submodule_search_locations[0])
    bare_package("nats.js", init_on_use=True, path=str(package / "js" / "__init__.py"))
    importlib.import_module("nats.js.api")
    hidden = [name for name in ("aiohttp", "importlib.metadata") if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # `import name` raises ImportError
    try:
        import nats.aio.client
    finally:
        for name in hidden:
            del sys.modules[name]
    nats.js = sys.modules["nats.js"]  # (set by the import system only for what it loaded itself)
    if nats.aio.client.__version__ == "0.0.0":  # its answer when importlib.metadata is missing
        versions = [d.name[len("nats_py-"):-len(".dist-info")] for d in package.parent.glob("nats_py-*.dist-info")]
        nats.aio.client.__version__ = versions[0] if len(versions) == 1 else "0.0.0"


_import_nats_lean()

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
