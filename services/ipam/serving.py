"""Bus request endpoints whose handlers may wait, served concurrently.

`Bus.serve` runs one request of a subject at a time (NATS delivers a subscription's
messages in order, and nats.micro awaits each handler). An allocation that waits for a
ring would then hold up every later request on that subject, `GET /status` among them
(the gossip service forwards all of Weave's HTTP paths over one subject). So these
subjects are served here: each request runs in its own task, up to a bound, and the
reply (or an ErrorReply, exactly as `BusCore.handle_request` builds it) is published
to the request's reply subject. A queue group keeps one answer per request while an
old and a new ipam process overlap during a restart.

What is lost against `Bus.serve`: nats.micro discovery and stats for these subjects.
(The better home for this is a `concurrent=True` option of `Bus.serve` in shared/bus.py.)
"""
from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, TypeVar

from pydantic import ValidationError

from shared.bus import Bus, BusMsg
from shared.errors import WeaveError
from shared.schemas.base import ErrorReply, Message

log = logging.getLogger(__name__)
M = TypeVar("M", bound=Message)
QUEUE_GROUP = "weave-ipam"


class ConcurrentServer:
    def __init__(self, bus: Bus, limit: int) -> None:
        self.bus, self.limit = bus, limit
        self.tasks: set[asyncio.Task] = set()
        self.closing = False

    async def serve(self, subject: str, request_type: type[M], handler: Callable[[M], Awaitable[Message]]) -> None:
        async def on_msg(msg: BusMsg) -> None:
            if msg.reply is None:
                return  # a publish, not a request: nobody to answer
            if self.closing or len(self.tasks) >= self.limit:
                why = "the ipam service is stopping" if self.closing else f"{self.limit} requests already waiting"
                await self._reply(msg.reply, ErrorReply(code="unavailable", description=why))
                return
            task = asyncio.get_running_loop().create_task(self._handle(msg, request_type, handler))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

        await self.bus.subscribe(subject, on_msg, queue=QUEUE_GROUP)

    async def _handle(self, msg: BusMsg, request_type: type[M], handler: Callable[[M], Awaitable[Message]]) -> None:
        await self._reply(msg.reply, await _answer(msg, request_type, handler))

    async def _reply(self, subject: str, reply: Message) -> None:
        try:
            await self.bus.publish(subject, reply)
        except Exception as exc:  # the bus is going away; the caller times out
            log.warning("cannot reply on %s: %s", subject, exc)

    async def drain(self, timeout: float) -> None:
        """Refuse new requests; wait up to `timeout` for those in hand to be answered."""
        self.closing = True
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=timeout)
        for task in list(self.tasks):
            task.cancel()


async def _answer(msg: BusMsg, request_type: type[M], handler: Callable[[M], Awaitable[Message]]) -> Message:
    try:
        request = request_type.model_validate_json(msg.data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ())) or "message"
        return ErrorReply(code="bad_request",
                          description=f"malformed {request_type.__name__}: {where}: {err.get('msg', 'invalid')}")
    try:
        return await handler(request)
    except WeaveError as exc:
        return ErrorReply(code=exc.code, description=exc.message)
    except Exception as exc:  # a bug in the handler: report it, keep serving
        log.exception("handler for %s failed", msg.subject)
        return ErrorReply(code="internal", description=f"{type(exc).__name__}: {exc}")
