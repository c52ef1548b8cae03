"""A small asyncio HTTP/1.1 server for local APIs (/metrics, /status, Weave's 6784 API).

One request per connection (`Connection: close`), bodies by Content-Length, bounded
sizes. Enough for curl, Prometheus and the CLI; not a general web server. Routes are
(method, path-pattern) with `{name}` segments; a handler gets a `Request` and returns a
`Response`. A handler that raises gives a 500 with the reason, never a dead server.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Awaitable, Callable
from urllib.parse import parse_qs, unquote, urlsplit

log = logging.getLogger(__name__)
MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 1024 * 1024
READ_TIMEOUT_S = 10.0
REASONS = {200: "OK", 204: "No Content", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           409: "Conflict", 500: "Internal Server Error", 503: "Service Unavailable"}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    params: dict[str, str] = field(default_factory=dict)

    def form(self) -> dict[str, list[str]]:
        """Query and urlencoded body fields together (Weave's /connect uses either)."""
        merged = {k: list(v) for k, v in self.query.items()}
        if self.body and "json" not in self.headers.get("content-type", ""):
            for k, v in parse_qs(self.body.decode(errors="replace")).items():
                merged.setdefault(k, []).extend(v)
        return merged


@dataclass
class Response:
    status: int = 200
    body: bytes | str = b""
    content_type: str = "text/plain; charset=utf-8"

    def encode(self) -> bytes:
        body = self.body.encode() if isinstance(self.body, str) else self.body
        head = (f"HTTP/1.1 {self.status} {REASONS.get(self.status, 'Status')}\r\n"
                f"Content-Type: {self.content_type}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n")
        return head.encode() + body


RouteHandler = Callable[[Request], Awaitable[Response]]


class HttpRouter:
    def __init__(self) -> None:
        self._routes: list[tuple[str, tuple[str, ...], RouteHandler]] = []
        self._prefixes: list[tuple[str, RouteHandler]] = []

    def add_prefix(self, prefix: str, handler: RouteHandler) -> None:
        """Every method on `prefix` and below it, when no exact route matched."""
        self._prefixes.append((prefix.rstrip("/"), handler))

    def add(self, method: str, pattern: str, handler: RouteHandler) -> None:
        """`pattern`: a path whose `{name}` segments each match one non-empty segment.
        Matched segment by segment, not by a regular expression: compiling one per route
        ran the re compiler in every service at its start, which copied the pages of its
        code from the supervisor's memory into each of them (issue 15)."""
        self._routes.append((method.upper(), tuple(pattern.split("/")), handler))

    async def dispatch(self, req: Request) -> Response:
        allowed = False
        parts = req.path.split("/")
        for method, segments, handler in self._routes:
            params = _match(segments, parts)
            if params is None:
                continue
            allowed = True
            if method == req.method:
                req.params = {k: unquote(v) for k, v in params.items()}
                return await handler(req)
        if allowed:
            return Response(405, f"method {req.method} not allowed on {req.path}\n")
        for prefix, handler in self._prefixes:
            if req.path == prefix or req.path.startswith(prefix + "/"):
                return await handler(req)
        return Response(404, f"404 page not found: {req.path}\n")


def _match(segments: tuple[str, ...], parts: list[str]) -> dict[str, str] | None:
    """The `{name}` segments' values if the path's segments match the pattern's, else None."""
    if len(segments) != len(parts):
        return None
    params = {}
    for want, got in zip(segments, parts):
        if want[:1] == "{" and want[-1:] == "}":
            if not got:
                return None
            params[want[1:-1]] = got
        elif want != got:
            return None
    return params


class HttpServer:
    def __init__(self, router: HttpRouter, host: str, port: int) -> None:
        self.router, self.host, self.port = router, host, port
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> int:
        """Listen; returns the bound port (useful when port 0 was asked for)."""
        self._server = await asyncio.start_server(self._handle, self.host, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            req = await asyncio.wait_for(_read_request(reader), READ_TIMEOUT_S)
            resp = Response(400, "bad request\n") if req is None else await self._dispatch(req)
            writer.write(resp.encode())
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def _dispatch(self, req: Request) -> Response:
        """One span per request, child of the caller's `traceparent` header if any."""
        from opentelemetry.trace import SpanKind

        from shared import tracing

        with tracing.tracer("weave.http").start_as_current_span(
                f"HTTP {req.method} {req.path}", context=tracing.extract(req.headers), kind=SpanKind.SERVER,
                attributes={"http.request.method": req.method, "url.path": req.path}) as span:
            try:
                resp = await self.router.dispatch(req)
            except Exception as exc:
                log.exception("HTTP %s %s failed", req.method, req.path)
                resp = Response(500, f"internal error: {type(exc).__name__}: {exc}\n")
            span.set_attribute("http.response.status_code", resp.status)
            return resp


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    head = await reader.readuntil(b"\r\n\r\n")
    if len(head) > MAX_HEADER_BYTES:
        return None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        return None
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        return None
    if not 0 <= length <= MAX_BODY_BYTES:
        return None
    body = await reader.readexactly(length) if length else b""
    url = urlsplit(parts[1])
    return Request(parts[0].upper(), url.path, parse_qs(url.query), headers, body)
