"""The `gossip` service: the host's router on the TCP mesh (asyncio shell).

Wires the sans-I/O Router to: a TCP listener and dialer on the mesh port (one reader
task per connection, writes bounded by MAX_SEND_BUFFER), one timer task that sleeps
until the router's next deadline, the local HTTP API (127.0.0.1:6784, as Weave Net:
/status, /report, /connect, /forget, /metrics) plus the read-only views on the status
port (6782), the bus (topology events and snapshots, connect/forget), and Prometheus
metrics with Weave Net's names. Direct peers are kept in the state dir so a restart of
this process reconnects to the same peers.
"""
from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
import struct
from pathlib import Path

from services.gossip import http_api
from services.gossip.metrics import MeshCollector
from shared.weave.peer_name import PeerName, PeerUID
from services.gossip.router import (Close, Dial, OverlayConn, OverlayDown, OverlayMessage, OverlayUp, Router,
                                    RouterConfig, TopologyChanged, Write)
from opentelemetry.trace import SpanKind

from shared import subjects, tracing
from shared.clock import sleep_or_wake
from shared.config import GossipSettings, LaunchConfig
from shared.durable import write_atomic
from shared.errors import WeaveError
from shared.http import HttpServer
from shared.schemas.base import Ok
from services.gossip.bridged_gossiper import Deliver
from shared.bus import BusMsg
from shared.schemas.base import Message
from shared.schemas.mesh import (BUS_CHANNELS, ConnectRequest, ForgetRequest, MeshReceive, MeshSend,
                                 OverlayConnection, OverlayConnectionEvent, OverlayConnectionsReply,
                                 OverlayConnectionsRequest, OverlayEstablished, OverlayFailed, OverlayMessageEvent,
                                 OverlaySend, PeerInfo, PeersRequest, TopologyEvent)
from shared.service import ServiceContext, run_service

log = logging.getLogger("weave.gossip")
API_PORT = 6784
DIAL_TIMEOUT_S = 10.0
MAX_SEND_BUFFER = 16 * 1024 * 1024  # bytes queued on one connection before we drop it
READ_CHUNK = 256 * 1024
PEERS_FILE = "gossip-peers.json"
OUTBOX_LIMIT = 10_000  # bus messages (gossip for owners, overlay events) waiting to be published
OVERLAYS: tuple[str, ...] = ("weave-py-vxlan", "sleeve")
"""Overlays we advertise and wait for. Empty: connections are established at once (mesh's
NullOverlay). The datapath's sleeve sets this to ("sleeve",) once it runs the overlay."""


def router_config(launch: LaunchConfig, settings: GossipSettings) -> RouterConfig:
    uid = random.SystemRandom().getrandbits(64) or 1
    return RouterConfig(
        name=PeerName.parse(launch.name), nickname=launch.nickname, uid=PeerUID(uid), port=launch.port,
        password=launch.password.encode() if launch.password is not None else None,
        conn_limit=launch.conn_limit, discovery=not launch.no_discovery,
        trusted_subnets=launch.trusted_subnets, bus_channels=BUS_CHANNELS, overlays=OVERLAYS,
        gossip_interval=settings.gossip_interval_s, heartbeat=settings.heartbeat_s,
        topology_defer=settings.topology_defer_s)


class GossipApp:
    def __init__(self) -> None:
        self.router: Router | None = None
        self.writers: dict[int, asyncio.StreamWriter] = {}
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self._topology_dirty = False
        self._removed: set[PeerName] = set()

    # -- life cycle ----------------------------------------------------------------------
    async def start(self, ctx: ServiceContext) -> None:
        self.ctx, self.bus = ctx, ctx.bus
        self.launch = ctx.config.launch
        self.loop = asyncio.get_running_loop()
        self.router = Router(router_config(self.launch, ctx.config.settings), random.Random(), self.loop.time())
        ctx.registry.register(MeshCollector(lambda: self.router))
        self.server = await asyncio.start_server(self._on_accept, self.launch.host, self.launch.port,
                                                 reuse_address=True)
        api = http_api.api_router(self, ctx.registry)
        self.api = HttpServer(api, "127.0.0.1", API_PORT)
        await self.api.start()
        http_api.add_status_routes(ctx.http, self)
        await ctx.bus.serve(subjects.request("gossip", "peers"), PeersRequest, self._on_peers)
        await ctx.bus.serve(subjects.request("gossip", "connect"), ConnectRequest, self._on_connect)
        await ctx.bus.serve(subjects.request("gossip", "forget"), ForgetRequest, self._on_forget)
        await ctx.bus.serve(subjects.request("gossip", "overlay_send"), OverlaySend, self._on_overlay_send)
        await ctx.bus.serve(subjects.request("gossip", "overlay_established"), OverlayEstablished,
                            self._on_overlay_established)
        await ctx.bus.serve(subjects.request("gossip", "overlay_failed"), OverlayFailed, self._on_overlay_failed)
        await ctx.bus.serve(subjects.request("gossip", "connections"), OverlayConnectionsRequest,
                            self._on_connections)
        self._outbox: asyncio.Queue[tuple[str, Message, str | None]] = asyncio.Queue(maxsize=OUTBOX_LIMIT)
        for channel in BUS_CHANNELS:
            await ctx.bus.subscribe(subjects.mesh_out(channel), self._on_mesh_send)
        self._spawn(self._outbox_loop())
        self._spawn(self._timer_loop())
        self.apply(self.router.connect(self._stored_peers(), self.now()))
        log.info("listening on %s:%d as %s(%s)", self.launch.host, self.launch.port,
                 self.router.config.name, self.router.config.nickname)

    async def stop(self) -> None:
        self.server.close()
        for writer in list(self.writers.values()):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await self.api.stop()

    def health(self) -> tuple[bool, str]:
        if self.router is None:
            return False, "starting"
        return True, f"{self.router.established_count()} established connections"

    def now(self) -> float:
        return self.loop.time()

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- direct peers, persisted -------------------------------------------------------------
    @property
    def _peers_file(self) -> Path:
        return self.launch.state_dir / PEERS_FILE

    def _stored_peers(self) -> list[str]:
        try:
            return list(json.loads(self._peers_file.read_text()))
        except (OSError, ValueError):
            return list(self.launch.peers)

    def save_peers(self) -> None:
        """Durably, before `connect`/`forget` is answered (blocking, ~1 ms)."""
        write_atomic(self._peers_file, json.dumps(self.router.maker.targets_status()))

    def connect(self, peers: list[str], replace: bool = False) -> None:
        self.apply(self.router.connect(peers, self.now(), replace=replace))
        self.save_peers()

    def forget(self, peers: list[str]) -> None:
        self.apply(self.router.forget(peers, self.now()))
        self.save_peers()

    # -- actions -------------------------------------------------------------------------
    def apply(self, actions: list) -> None:
        """Carry out the router's actions, then wake the timer: deadlines may have moved."""
        self._execute(actions)
        self._wake.set()

    def _execute(self, actions: list) -> None:
        for action in actions:
            if isinstance(action, Write):
                self._write(action.key, action.data)
            elif isinstance(action, Close):
                writer = self.writers.pop(action.key, None)
                if writer is not None:
                    writer.close()
            elif isinstance(action, Dial):
                self._spawn(self._dial(action.address, action.accept_new_peer))
            elif isinstance(action, TopologyChanged):
                self._removed.update(action.removed)
                self._mark_topology()
            elif isinstance(action, Deliver):
                self._publish(subjects.mesh_in(action.channel),
                              MeshReceive(kind=action.kind, src=action.src, payload=action.payload),
                              trace=action.trace)
            elif isinstance(action, (OverlayUp, OverlayDown)):
                kind = "added" if isinstance(action, OverlayUp) else "removed"
                self._publish(subjects.event("overlay_connection"),
                              OverlayConnectionEvent(kind=kind, connection=_overlay_schema(action.conn)))
            elif isinstance(action, OverlayMessage):
                self._publish(subjects.event("overlay_message"), OverlayMessageEvent(
                    peer=action.peer, conn_uid=action.conn_uid, tag=action.tag, payload=action.payload))

    def _write(self, key: int, data: bytes) -> None:
        writer = self.writers.get(key)
        if writer is None or writer.is_closing():
            return
        if writer.transport.get_write_buffer_size() > MAX_SEND_BUFFER:
            log.warning("connection %d: send queue over %d bytes; dropping it", key, MAX_SEND_BUFFER)
            self.writers.pop(key, None)
            writer.close()
            self.apply(self.router.connection_lost(key, self.now(), "send queue full"))
            return
        writer.write(data)

    # -- connections -----------------------------------------------------------------------
    async def _on_accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _no_linger(writer)
        host, port = writer.get_extra_info("peername")[:2]
        key, actions = self.router.open_connection(False, f"{host}:{port}", self.now(), local_addr=_sockname(writer))
        await self._run_connection(key, reader, writer, actions)

    async def _dial(self, address: str, accept_new_peer: bool) -> None:
        host, _, port = address.rpartition(":")
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), DIAL_TIMEOUT_S)
        except (OSError, asyncio.TimeoutError, ValueError) as exc:
            self.apply(self.router.dial_failed(address, self.now(), _dial_error(exc)))
            return
        _no_linger(writer)
        key, actions = self.router.open_connection(True, address, self.now(), dial_address=address,
                                                   accept_new_peer=accept_new_peer, local_addr=_sockname(writer))
        await self._run_connection(key, reader, writer, actions)

    async def _run_connection(self, key: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                              actions: list) -> None:
        self.writers[key] = writer
        self.apply(actions)
        reason = "EOF"
        try:
            while key in self.writers:
                data = await reader.read(READ_CHUNK)
                if not data:
                    break
                self.apply(self.router.receive(key, data, self.now()))
        except (ConnectionError, OSError) as exc:
            reason = str(exc) or type(exc).__name__
        finally:
            self.writers.pop(key, None)
            writer.close()
            self.apply(self.router.connection_lost(key, self.now(), reason))

    async def _timer_loop(self) -> None:
        """Sleep until the router's next deadline or a wake-up, then tick."""
        while True:
            deadline = self.router.next_deadline()
            await sleep_or_wake(self._wake, None if deadline is None else deadline - self.now())
            self._execute(self.router.tick(self.now()))
            if self._topology_dirty:
                self._topology_dirty = False
                await self._publish_topology()

    # -- bus -------------------------------------------------------------------------------
    def _mark_topology(self) -> None:
        self._topology_dirty = True

    def topology(self) -> TopologyEvent:
        view = self.router.topology_view()
        peers = tuple(PeerInfo(name=p.name, nickname=p.nickname, uid=int(p.uid), short_id=p.short_id,
                               reachable=p.reachable, address=p.address) for p in view.peers)
        return TopologyEvent(ourself=view.ourself, peers=peers, removed=tuple(sorted(self._removed)),
                             unicast=view.unicast, broadcast=view.broadcast)

    async def _publish_topology(self) -> None:
        event = self.topology()
        self._removed.clear()
        try:
            await self.ctx.bus.publish(subjects.event("topology"), event)
        except Exception as exc:  # the bus may be restarting; the next change republishes
            log.warning("cannot publish topology: %s", exc)

    async def _on_mesh_send(self, msg: BusMsg) -> None:
        """A channel owner's gossip (weave.mesh.<channel>.out); bad messages are logged and dropped."""
        channel = msg.subject.split(".")[2]
        try:
            send = MeshSend.model_validate_json(msg.data)
            dst = send.dst
            trace = tracing.inject().get("traceparent")  # the owner's trace, carried to weave-py peers
            self.apply(self.router.send_gossip(channel, send.kind, send.payload, self.now(), dst=dst, trace=trace))
        except (ValueError, WeaveError) as exc:
            log.warning("dropping malformed gossip from the %s owner: %s", channel, exc)

    def _publish(self, subject: str, msg: Message, trace: str | None = None) -> None:
        try:
            self._outbox.put_nowait((subject, msg, trace))
        except asyncio.QueueFull:  # owners catch up by periodic gossip; the datapath by resync
            log.warning("dropping a message for %s: outbox full", subject)

    async def _outbox_loop(self) -> None:
        """Publish in order what the router produced for local services (they may be down)."""
        while True:
            subject, msg, trace = await self._outbox.get()
            try:
                if trace:  # gossip a weave-py peer sent within a trace: continue that trace here
                    with tracing.tracer("weave.gossip").start_as_current_span(
                            f"{subject} gossip receipt", context=tracing.extract({"traceparent": trace}),
                            kind=SpanKind.CONSUMER, attributes={"weave.peer.src": getattr(msg, "src", "")}):
                        await self.ctx.bus.publish(subject, msg)
                else:
                    await self.ctx.bus.publish(subject, msg)
            except Exception as exc:
                log.warning("cannot publish on %s: %s", subject, exc)

    async def _on_overlay_send(self, req: OverlaySend) -> Ok:
        self.apply(self.router.send_overlay(req.peer, req.conn_uid, req.tag, req.payload,
                                            self.now()))
        return Ok()

    async def _on_overlay_established(self, req: OverlayEstablished) -> Ok:
        attrs = {"mtu": req.mtu, "encrypted": req.encrypted} if req.mtu else {"encrypted": req.encrypted}
        self.apply(self.router.overlay_established(req.peer, self.now(), req.overlay, attrs,
                                                   conn_uid=req.conn_uid))
        return Ok()

    async def _on_overlay_failed(self, req: OverlayFailed) -> Ok:
        self.apply(self.router.overlay_failed(req.peer, req.conn_uid, req.reason, self.now()))
        return Ok()

    async def _on_connections(self, _: OverlayConnectionsRequest) -> OverlayConnectionsReply:
        return OverlayConnectionsReply(connections=tuple(_overlay_schema(c) for c in self.router.overlay_connections()))

    async def _on_peers(self, _: PeersRequest) -> TopologyEvent:
        return self.topology()

    async def _on_connect(self, req: ConnectRequest) -> Ok:
        self.connect(list(req.peers), req.replace)
        return Ok()

    async def _on_forget(self, req: ForgetRequest) -> Ok:
        self.forget(list(req.peers))
        return Ok()


def _overlay_schema(c: OverlayConn) -> OverlayConnection:
    return OverlayConnection(peer=c.peer, nickname=c.nickname, conn_uid=c.conn_uid, outbound=c.outbound,
                             remote_addr=c.remote_addr, local_addr=c.local_addr, session_key=c.session_key,
                             overlays=c.overlays, compat=c.compat, remote_short_id=c.remote_short_id)


def _sockname(writer: asyncio.StreamWriter) -> str:
    name = writer.get_extra_info("sockname")
    return f"{name[0]}:{name[1]}" if name else ""


def _no_linger(writer: asyncio.StreamWriter) -> None:
    """SO_LINGER 0 as mesh: a closed connection is reset, not left in TIME_WAIT."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _dial_error(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "dial timeout"
    return str(exc) or type(exc).__name__


def main() -> None:
    run_service("gossip", GossipApp)


if __name__ == "__main__":
    main()
