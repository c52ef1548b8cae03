"""Controls through the app (Scope's app/controls.go and control_router.go).

How a control reaches a probe: each probe dials the control websocket
(`GET /api/control/ws`, header `X-Scope-Probe-ID`, the app's token) of its own host's
app and of every `--scope-target` app, and keeps it open; the app keeps one
`ProbeConnection` per probe id. `POST /api/control/<probe id>/<node id>/<control>` (body:
a JSON map of string arguments, bounded) is sent as one rpc call on that probe's
websocket and its answer returned as Scope's (200 with the response; 400 with the error
as a JSON string). So an app runs controls only on probes connected to it; a node shown
from another host's report (the mesh) lists no controls here: that host's own app runs
them. Terminal bytes never cross the bus or the mesh.

Refused before any probe is asked: every control while the app's controls are off (403,
a JSON string saying how to turn them on), a probe not connected (400), a body over
`max_control_body_bytes` (413) or not a JSON map of strings (400).
"""
from __future__ import annotations

import asyncio
import itertools
import json
import logging
from urllib.parse import unquote

from aiohttp import WSMsgType, web

from services.scope import xfer
from shared.errors import RemoteProtocolError

log = logging.getLogger("weave.scope.app.controls")
CONTROLS_OFF = ("controls are off on this Scope app: launch it with 'weave launch --scope-controls "
                "--scope-token TOKEN' to detach containers, restart services and open terminals")


class ControlError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class ProbeConnection:
    """One probe's control websocket: rpc calls out, their answers matched by Seq."""

    def __init__(self, probe_id: str, ws: web.WebSocketResponse) -> None:
        self.probe_id, self.ws = probe_id, ws
        self._seq = itertools.count()
        self._pending: dict[int, asyncio.Future] = {}
        self._reader = xfer.RpcReader()

    async def call(self, request: xfer.Request, timeout_s: float) -> dict:
        seq = next(self._seq)
        answer = asyncio.get_running_loop().create_future()
        self._pending[seq] = answer
        try:
            for frame in xfer.request_frames(seq, request):
                await self.ws.send_str(frame)
            return await asyncio.wait_for(answer, timeout_s)
        except asyncio.TimeoutError:
            raise ControlError(400, f"the probe did not answer control {request.control} within {timeout_s:g} s")
        except ConnectionError as exc:
            raise ControlError(400, f"the probe's control connection broke: {exc}") from None
        finally:
            self._pending.pop(seq, None)

    def feed(self, text: str) -> None:
        """A message from the probe (RemoteProtocolError: not the protocol)."""
        call = self._reader.feed(text)
        if call is None:
            return
        if call.kind != "response":
            raise RemoteProtocolError("the probe sent an rpc request on its control websocket", code="bad_control")
        answer = self._pending.get(call.seq)
        if answer is None or answer.done():
            return  # timed out already
        if call.error:
            answer.set_result(xfer.response(error=call.error))
        elif isinstance(call.value, dict):
            answer.set_result(call.value)
        else:
            answer.set_exception(RemoteProtocolError("control response is not an object", code="bad_control"))

    def close(self) -> None:
        for answer in self._pending.values():
            if not answer.done():
                answer.set_exception(ControlError(400, "the probe's control connection closed"))


class ControlRouter:
    """Probe id -> its control connection (the newest, when a probe reconnects)."""

    def __init__(self, websockets=None) -> None:
        """`websockets`: a set the shell closes at stop; each probe's socket joins it."""
        self.probes: dict[str, ProbeConnection] = {}
        self.websockets = websockets if websockets is not None else set()

    def connected(self, probe_id: str) -> bool:
        return probe_id in self.probes

    def register(self, conn: ProbeConnection) -> None:
        old = self.probes.get(conn.probe_id)
        self.probes[conn.probe_id] = conn
        if old is not None:
            old.close()

    def deregister(self, conn: ProbeConnection) -> None:
        if self.probes.get(conn.probe_id) is conn:
            del self.probes[conn.probe_id]
        conn.close()

    async def handle(self, probe_id: str, request: xfer.Request, timeout_s: float) -> dict:
        conn = self.probes.get(probe_id)
        if conn is None:
            raise ControlError(400, f"probe {probe_id} is not connected to this app: a node's controls run on "
                                    "the app of the host its probe runs on (or one it has as --scope-target)")
        return await conn.call(request, timeout_s)


def parse_args(body: bytes) -> dict[str, str]:
    """A control's body: empty, or a JSON object of strings (ControlError 400 otherwise)."""
    if not body.strip():
        return {}
    try:
        args = json.loads(body)
    except ValueError:
        raise ControlError(400, "the control's body is not JSON") from None
    if not isinstance(args, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in args.items()):
        raise ControlError(400, "the control's body must be a JSON object of strings")
    return args


def control_path(raw_path: str) -> tuple[str, str, str] | None:
    """`/api/control/<probe>/<node>/<control>` split on the raw path (a node id may hold
    an encoded `/`), each part URL-decoded; None if it is not that shape."""
    parts = raw_path.split("?", 1)[0].split("/")[3:]
    if len(parts) != 3 or not all(parts):
        return None
    return unquote(parts[0]), unquote(parts[1]), unquote(parts[2])


async def read_bounded(request: web.Request, limit: int) -> bytes:
    """The body, at most `limit` bytes (ControlError 413 past it)."""
    if (request.content_length or 0) > limit:
        raise ControlError(413, f"a control's body is at most {limit} bytes")
    body = await request.content.read(limit + 1)
    if len(body) > limit:
        raise ControlError(413, f"a control's body is at most {limit} bytes")
    return body


async def serve_probe_websocket(request: web.Request, router: ControlRouter, max_frame: int) -> web.StreamResponse:
    """`GET /api/control/ws`: a probe's control connection, open until it goes."""
    probe_id = request.headers.get(xfer.PROBE_ID_HEADER, "")
    if not probe_id:
        return web.Response(status=400, body=json.dumps(xfer.PROBE_ID_HEADER).encode(),
                            content_type="application/json")
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=max_frame)
    await ws.prepare(request)
    router.websockets.add(ws)
    conn = ProbeConnection(probe_id, ws)
    router.register(conn)
    log.info("probe %s connected its control websocket from %s", probe_id, request.remote)
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                break
            conn.feed(msg.data)
    except RemoteProtocolError as exc:
        log.warning("probe %s: %s; closing its control websocket", probe_id, exc)
    finally:
        router.deregister(conn)
        await ws.close()
        log.info("probe %s control websocket closed", probe_id)
    return ws
