"""The local bus: one protocol, two implementations with the same semantics.

- `NatsBus`: our NATS client (shared/nats_client.py) against the host's nats-server
  (loopback, token). Each process answers `$SRV.PING|INFO|STATS` discovery as a
  `nats.micro` service does.
- `MemoryBus`: an in-process twin over a shared `MemoryBroker`, for the cluster tier.

Both share `BusCore`, which holds everything that is not transport: typed encoding,
structured error replies, and W3C trace context (injected on send, extracted and
turned into one span per handled message). Delivery contract, as NATS: messages of one
subscription are handled one at a time, in order; a handler that raises is logged and
the subscription carries on; a request with no responder fails at once.
"""
from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Protocol, TypeVar

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from pydantic import ValidationError

from shared import subjects, tracing
from shared.delivery import Delivery
from shared.errors import WeaveError
from shared.schemas.base import ErrorReply, Message, parse_reply

log = logging.getLogger(__name__)
M = TypeVar("M", bound=Message)
R = TypeVar("R", bound=Message)

DEFAULT_TIMEOUT_S = 2.0
CLOSE_GRACE_S = 3.0  # on close, how long handlers already running may take to answer
QUIET_SUFFIX = ".health"
"""Subjects ending so (health probes, `subjects.health`) are not traced."""


class BusError(WeaveError):
    """A request failed: the responder's ErrorReply, a timeout, or nobody listening."""

    def __init__(self, code: str, description: str, *, subject: str = "") -> None:
        super().__init__(f"{subject}: {code}: {description}" if subject else f"{code}: {description}",
                         code=code, subject=subject)
        self.description = description
        self.subject = subject


@dataclass(frozen=True)
class BusMsg:
    """A message as a subscriber sees it."""

    subject: str
    data: bytes
    headers: dict[str, str] = field(default_factory=dict)
    reply: str | None = None


Handler = Callable[[BusMsg], Awaitable[None]]


class Subscription(Protocol):
    async def unsubscribe(self) -> None: ...


class Bus(Protocol):
    """What services use. `service` names the process, for spans and discovery."""

    service: str

    async def publish(self, subject: str, message: Message, *, headers: dict[str, str] | None = None) -> None: ...
    async def subscribe(self, subject: str, handler: Handler, *, queue: str | None = None) -> Subscription: ...
    async def request(self, subject: str, message: Message, reply_type: type[R], *,
                      timeout: float = DEFAULT_TIMEOUT_S) -> R: ...
    async def serve(self, subject: str, request_type: type[M], handler: Callable[[M], Awaitable[Message]], *,
                    concurrency: int = 1) -> None:
        """Answer requests on `subject`. concurrency 1: one at a time, in order (NATS's
        own delivery); N > 1: up to N handlers at once, the (N+1)th waiting for a slot,
        for handlers that may wait long (an allocation awaiting consensus)."""
    async def close(self) -> None: ...


class BusCore:
    """Transport-independent half of a bus client. Subclasses provide the `_raw_*` calls."""

    def __init__(self, service: str) -> None:
        self.service = service
        self._tracer = trace.get_tracer(f"weave.{service}.bus")
        self._slots: list[Concurrency] = []

    def _concurrency(self, limit: int) -> Concurrency:
        slots = Concurrency(limit)
        self._slots.append(slots)
        return slots

    async def _drain_handlers(self) -> None:
        """Let concurrent handlers in hand answer before the connection goes."""
        await asyncio.gather(*(s.drain(CLOSE_GRACE_S) for s in self._slots))

    # -- transport hooks ------------------------------------------------------
    async def _raw_publish(self, subject: str, data: bytes, headers: dict[str, str]) -> None:
        raise NotImplementedError

    async def _raw_request(self, subject: str, data: bytes, headers: dict[str, str], timeout: float) -> bytes:
        """Return the reply bytes; raise BusError('timeout'|'unavailable', ...)."""
        raise NotImplementedError

    # -- typed API ------------------------------------------------------------
    async def publish(self, subject: str, message: Message, *, headers: dict[str, str] | None = None) -> None:
        with self._tracer.start_as_current_span(f"{subject} publish", kind=SpanKind.PRODUCER,
                                                attributes=_attrs(subject, "publish")):
            await self._raw_publish(subject, _encode(message), tracing.inject(headers))

    def _span(self, name: str, subject: str, **kw):
        """A span for one message, except for health probes: a liveness check is not an
        operation anyone follows, and tracing it would write spans while all is idle."""
        if subject.endswith(QUIET_SUFFIX):
            return trace.use_span(trace.INVALID_SPAN)
        return self._tracer.start_as_current_span(name, **kw)

    async def request(self, subject: str, message: Message, reply_type: type[R], *,
                      timeout: float = DEFAULT_TIMEOUT_S) -> R:
        """Send a request and return the typed reply; an ErrorReply raises BusError."""
        with self._span(f"{subject} request", subject, kind=SpanKind.CLIENT,
                        attributes=_attrs(subject, "request"), record_exception=False) as span:
            try:
                data = await self._raw_request(subject, _encode(message), tracing.inject(), timeout)
                return _typed_reply(span, subject, data, reply_type)
            except Exception as exc:
                _record_failure(span, exc)
                raise

    async def handle_request(self, subject: str, data: bytes, headers: dict[str, str] | None,
                             request_type: type[M], handler: Callable[[M], Awaitable[Message]]) -> bytes:
        """Decode, run the handler in a span, and encode its reply or a structured error.

        Never raises: whatever goes wrong becomes an ErrorReply for the caller.
        """
        ctx = tracing.extract(headers)
        with self._span(f"{subject} process", subject, context=ctx, kind=SpanKind.SERVER,
                        attributes=_attrs(subject, "process")) as span:
            try:
                request = request_type.model_validate_json(data)
            except ValidationError as exc:
                span.set_status(Status(StatusCode.ERROR, "bad_request"))
                return _encode(ErrorReply(code="bad_request",
                                          description=f"malformed {request_type.__name__}: {_first_error(exc)}"))
            try:
                return _encode(await handler(request))
            except WeaveError as exc:
                span.set_status(Status(StatusCode.ERROR, exc.code))
                return _encode(ErrorReply(code=exc.code, description=exc.message))
            except Exception as exc:  # a bug in the handler: report it, keep serving
                log.exception("handler for %s failed", subject)
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, "internal"))
                return _encode(ErrorReply(code="internal", description=f"{type(exc).__name__}: {exc}"))

    async def deliver(self, handler: Handler, msg: BusMsg) -> None:
        """Run a subscription handler for one message in a consumer span; log failures."""
        ctx = tracing.extract(msg.headers)
        with self._tracer.start_as_current_span(f"{msg.subject} receive", context=ctx, kind=SpanKind.CONSUMER,
                                                attributes=_attrs(msg.subject, "receive")):
            try:
                await handler(msg)
            except Exception:
                log.exception("subscriber of %s failed", msg.subject)


class Concurrency:
    """Runs request handlers inline (limit 1) or as up to `limit` tasks at once; past the
    limit the caller waits for a slot, so a subscription's backlog stays bounded."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("concurrency must be at least 1")
        self._sem = asyncio.Semaphore(limit) if limit > 1 else None
        self._tasks: set[asyncio.Task] = set()

    async def run(self, work: Callable[[], Awaitable[None]]) -> None:
        if self._sem is None:
            await work()
            return
        await self._sem.acquire()
        task = asyncio.get_running_loop().create_task(work())
        self._tasks.add(task)
        task.add_done_callback(self._done)

    async def drain(self, timeout: float) -> None:
        """Wait up to `timeout` for the handlers in hand to answer."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        self._sem.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("request handler failed: %r", task.exception())


def _typed_reply(span: trace.Span, subject: str, data: bytes, reply_type: type[R]) -> R:
    """The reply as `reply_type`; an ErrorReply, or what is neither, raises BusError."""
    try:
        reply = parse_reply(data, reply_type)
    except ValidationError as exc:
        span.set_status(Status(StatusCode.ERROR, "bad reply"))
        raise BusError("bad_reply", f"reply does not match {reply_type.__name__}: {_first_error(exc)}",
                       subject=subject) from exc
    if isinstance(reply, ErrorReply):
        span.set_status(Status(StatusCode.ERROR, reply.code))
        raise BusError(reply.code, reply.description, subject=subject)
    return reply


def _record_failure(span: trace.Span, exc: Exception) -> None:
    """A BusError is the bus's own answer (nobody serves the subject, a timeout, the
    responder's error): an exception event without a stack trace. OpenTelemetry's
    record_exception formats one by reading every frame's source file into linecache,
    kept for the process's life: in a service racing its peers at start, ~100 kB of
    sources for an expected "unavailable" (issue 15). Anything else is a bug: whole."""
    if isinstance(exc, BusError):
        span.add_event("exception", {"exception.type": type(exc).__name__, "exception.message": str(exc)})
    else:
        span.record_exception(exc)


def _encode(message: Message) -> bytes:
    return message.model_dump_json().encode()


def _attrs(subject: str, operation: str) -> dict[str, str]:
    return {"messaging.system": "nats", "messaging.destination.name": subject,
            "messaging.operation": operation}


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ())) or "message"
    return f"{where}: {err.get('msg', 'invalid')}"


# --------------------------------------------------------------------------------
# In-memory twin
# --------------------------------------------------------------------------------
class MemoryBroker:
    """Stands in for one nats-server: routes messages between MemoryBus clients."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._subs: list[_MemorySub] = []
        self._rng = rng or random.Random()
        self._inbox_seq = 0

    def new_inbox(self) -> str:
        self._inbox_seq += 1
        return f"_INBOX.mem.{self._inbox_seq}"

    def route(self, msg: BusMsg) -> int:
        """Queue `msg` on every matching subscription (one per queue group); return how many."""
        matching = [s for s in self._subs if subjects.matches(s.subject, msg.subject)]
        plain = [s for s in matching if s.queue is None]
        groups: dict[str, list[_MemorySub]] = {}
        for s in matching:
            if s.queue is not None:
                groups.setdefault(s.queue, []).append(s)
        chosen = plain + [self._rng.choice(members) for members in groups.values()]
        for s in chosen:
            s.offer(msg)
        return len(chosen)

    def add(self, sub: "_MemorySub") -> None:
        self._subs.append(sub)

    def remove(self, sub: "_MemorySub") -> None:
        if sub in self._subs:
            self._subs.remove(sub)


class _MemorySub(Delivery):
    def __init__(self, broker: MemoryBroker, subject: str, queue: str | None,
                 callback: Callable[[BusMsg], Awaitable[None]]) -> None:
        super().__init__(subject, callback)
        self.broker, self.subject, self.queue = broker, subject, queue

    async def unsubscribe(self) -> None:
        self.broker.remove(self)
        self.stop()


class MemoryBus(BusCore):
    """In-process bus client; every MemoryBus on one MemoryBroker sees the others."""

    def __init__(self, broker: MemoryBroker, service: str) -> None:
        super().__init__(service)
        self.broker = broker
        self._subs: list[_MemorySub] = []

    async def _raw_publish(self, subject: str, data: bytes, headers: dict[str, str]) -> None:
        self.broker.route(BusMsg(subject, data, headers))

    async def _raw_request(self, subject: str, data: bytes, headers: dict[str, str], timeout: float) -> bytes:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bytes] = loop.create_future()

        async def on_reply(msg: BusMsg) -> None:
            if not fut.done():
                fut.set_result(msg.data)

        inbox = self.broker.new_inbox()
        sub = _MemorySub(self.broker, inbox, None, on_reply)
        self.broker.add(sub)
        try:
            if self.broker.route(BusMsg(subject, data, headers, reply=inbox)) == 0:
                raise BusError("unavailable", f"no service answers {subject}", subject=subject)
            try:
                return await asyncio.wait_for(fut, timeout)
            except asyncio.TimeoutError:
                raise BusError("timeout", f"no reply within {timeout:g} s", subject=subject) from None
        finally:
            await sub.unsubscribe()

    async def subscribe(self, subject: str, handler: Handler, *, queue: str | None = None) -> Subscription:
        sub = _MemorySub(self.broker, subject, queue, lambda m: self.deliver(handler, m))
        self.broker.add(sub)
        self._subs.append(sub)
        return sub

    async def serve(self, subject: str, request_type: type[M], handler: Callable[[M], Awaitable[Message]], *,
                    concurrency: int = 1) -> None:
        slots = self._concurrency(concurrency)

        async def answer(msg: BusMsg) -> None:
            reply = await self.handle_request(msg.subject, msg.data, msg.headers, request_type, handler)
            if msg.reply:
                self.broker.route(BusMsg(msg.reply, reply))

        async def on_request(msg: BusMsg) -> None:
            await slots.run(lambda: answer(msg))

        sub = _MemorySub(self.broker, subject, f"q.{subject}", on_request)
        self.broker.add(sub)
        self._subs.append(sub)

    async def close(self) -> None:
        """As NatsBus: no new messages; what was received, and requests in hand, may
        still be answered (for up to CLOSE_GRACE_S)."""
        for sub in self._subs:
            self.broker.remove(sub)
        await asyncio.gather(*(sub.idle(CLOSE_GRACE_S) for sub in self._subs))
        await self._drain_handlers()
        for sub in self._subs:
            await sub.unsubscribe()
        self._subs.clear()
