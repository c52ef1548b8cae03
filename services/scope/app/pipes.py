"""Pipes (Scope's app/pipes.go and pipe_router.go): a terminal's bytes between the
page (`GET /api/pipe/<id>`, websocket) and the probe (`GET /api/pipe/<id>/probe`,
websocket, dialled by the probe after it answered a control with that pipe id).

Differences from Scope's, for safety: a pipe exists only once a control this app
relayed answered with its id (`announce`); any other id is 404 at both ends, so neither
a page nor a probe can make pipes up. A probe end must come from the probe that
announced it (its `X-Scope-Probe-ID`). At most `max_pipes` at once; a pipe whose two
ends have not both connected within `connect_timeout_s` is closed, and so is a pipe
when either end goes or on `DELETE /api/pipe/<id>` (Scope keeps a pipe a minute for a
reconnecting end; a terminal here is one session). Each direction is a bounded queue:
a slow reader stops the other end's reads instead of growing memory. Messages are
bounded by the websocket's `max_msg_size`.
"""
from __future__ import annotations

import asyncio
import logging

from aiohttp import WSMsgType, web

log = logging.getLogger("weave.scope.app.pipes")
UI, PROBE = "ui", "probe"
QUEUE_MESSAGES = 64


class Pipe:
    def __init__(self, pipe_id: str, probe_id: str) -> None:
        self.id, self.probe_id = pipe_id, probe_id
        self.queues = {UI: asyncio.Queue(QUEUE_MESSAGES), PROBE: asyncio.Queue(QUEUE_MESSAGES)}
        """Messages waiting to be written to that end."""
        self.ends: set[str] = set()
        self.connected_once: set[str] = set()
        self.closed = asyncio.Event()

    def close(self) -> None:
        self.closed.set()


class PipeRouter:
    def __init__(self, max_pipes: int = 32, connect_timeout_s: float = 60.0, websockets=None) -> None:
        """`websockets`: a set the shell closes at stop; each end's socket joins it."""
        self.max_pipes, self.connect_timeout_s = max_pipes, connect_timeout_s
        self.websockets = websockets if websockets is not None else set()
        self.pipes: dict[str, Pipe] = {}

    def announce(self, pipe_id: str, probe_id: str) -> Pipe:
        """A control answered with `pipe_id`: the pipe may now be connected to.
        ValueError when too many are open."""
        if pipe_id in self.pipes:
            return self.pipes[pipe_id]
        if len(self.pipes) >= self.max_pipes:
            raise ValueError(f"{self.max_pipes} pipes are open already")
        pipe = self.pipes[pipe_id] = Pipe(pipe_id, probe_id)
        asyncio.get_running_loop().call_later(self.connect_timeout_s, self._expire, pipe)
        return pipe

    def get(self, pipe_id: str) -> Pipe | None:
        return self.pipes.get(pipe_id)

    def delete(self, pipe_id: str) -> bool:
        pipe = self.pipes.pop(pipe_id, None)
        if pipe is not None:
            pipe.close()
        return pipe is not None

    def _expire(self, pipe: Pipe) -> None:
        if pipe.connected_once != {UI, PROBE} and self.pipes.get(pipe.id) is pipe:
            log.info("pipe %s: closed, both ends did not connect within %.0f s", pipe.id, self.connect_timeout_s)
            self.delete(pipe.id)

    async def serve(self, request: web.Request, pipe: Pipe, end: str, max_frame: int) -> web.StreamResponse:
        """One end's websocket, until either end goes or the pipe is deleted."""
        if end in pipe.ends:
            return web.Response(status=409, text=f"the pipe's {end} end is connected already\n")
        ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=max_frame)
        await ws.prepare(request)
        self.websockets.add(ws)
        pipe.ends.add(end)
        pipe.connected_once.add(end)
        other = PROBE if end == UI else UI
        tasks = [asyncio.ensure_future(_read(ws, pipe.queues[other])),
                 asyncio.ensure_future(_write(ws, pipe.queues[end])),
                 asyncio.ensure_future(pipe.closed.wait())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            pipe.ends.discard(end)
            self.delete(pipe.id)  # one end gone: the session is over
            await _flush(ws, pipe.queues[end])  # what the other end said last (a shell's goodbye)
            await ws.close()
        return ws


async def _read(ws: web.WebSocketResponse, towards: asyncio.Queue) -> None:
    async for msg in ws:
        if msg.type == WSMsgType.BINARY:
            await towards.put(msg.data)
        elif msg.type == WSMsgType.TEXT:
            await towards.put(msg.data.encode())
        else:
            return


async def _write(ws: web.WebSocketResponse, queue: asyncio.Queue) -> None:
    while True:
        data = await queue.get()
        await ws.send_bytes(data)


async def _flush(ws: web.WebSocketResponse, queue: asyncio.Queue, timeout_s: float = 1.0) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            while not queue.empty() and not ws.closed:
                await ws.send_bytes(queue.get_nowait())
    except (TimeoutError, ConnectionError):
        pass
