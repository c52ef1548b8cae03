"""The datapath's overlays, wired to the bus: the sleeve (sleeve_shell.py) and the
fastpath (fastpath_shell.py) each have a shell; this one feeds them what the gossip
service says and carries out what the OverlaySwitch (overlay_switch.py) decides.

Inputs, each handled to completion on the event loop thread (no locks):
- weave.events.overlay_connection: a connection that offers sleeve goes to the switch
  (its fastpath path) and to the sleeve (a forwarder); a removed one leaves both;
- weave.events.overlay_message: the peers' control messages, for the sleeve;
- weave.events.topology: the data-plane routes, for the sleeve;
- at start and every RESYNC_S, snapshots (weave.gossip.connections, .peers): a
  restarted datapath catches up, and a lost event is repaired; after the first one,
  what a previous process left in the kernel is pruned (the switch says what);
- the fastpath's heartbeats, for the switch: as each arrives while a path is being
  proven, else read at the switch's beat (the timer task) with their arrival times; the
  sleeve's verdicts (sleeve_mesh), for the switch;
- one timer task for the sleeve's deadlines (forwarders, MAC expiry) and the switch's.
The switch's actions: kernel work (FDB entries, flushes, allowed sources, pruning,
heartbeats) goes to the fastpath shell, and the MACs a flush removed (the containers
behind a peer the fastpath stopped carrying) to the sleeve's MAC cache; Report and
Fail become OverlayEstablished and OverlayFailed for the gossip service, which leave
with the sleeve's control messages (OverlaySend) in order through one bounded outbox.
"""
from __future__ import annotations

import asyncio
import logging
import time

from services.datapath import fastpath as fp
from services.datapath.fastpath_shell import FastpathShell
from services.datapath.overlay_report import FastpathStatus, router_report
from services.datapath.overlay_switch import (FASTPATH, HEARTBEAT_S, IDLE_HEARTBEAT_S, Action, Fail, OverlaySwitch,
                                              Report, SleeveStatus, Switched)
from services.datapath.sleeve_mesh import OVERLAY
from services.datapath.sleeve_shell import SleeveShell
from shared import subjects
from shared.clock import sleep_or_wake
from shared.bus import Bus, BusError, BusMsg
from shared.config import DatapathSettings
from shared.schemas.base import Message, Ok
from shared.schemas.mesh import (OverlayConnection, OverlayConnectionEvent, OverlayConnectionsReply,
                                 OverlayConnectionsRequest, OverlayEstablished, OverlayFailed, OverlayMessageEvent,
                                 PeersRequest, TopologyEvent)
from shared.weave.peer_name import PeerName

log = logging.getLogger("weave.datapath.overlay")

OUTBOX_LIMIT = 10_000
RESYNC_S = 30.0
SNAPSHOT_RETRY_S = 1.0
BUS_TIMEOUT_S = 5.0


class OverlayShell:
    def __init__(self, bus: Bus, ourself: PeerName, host: str, port: int, pcap_ifname: str, mode: str = "sleeve",
                 bridge: str = "weave", bridge_port: str = "vethwe-bridge",
                 settings: DatapathSettings = DatapathSettings()) -> None:
        self.bus, self.mode = bus, mode
        self.switch = OverlaySwitch("sleeve")
        """Replaced once at start, before any connection, by one for the mode that runs."""
        self.fastpath = FastpathShell(ourself, host, bridge, bridge_port)
        self.sleeve = SleeveShell(ourself, host, port, pcap_ifname, fast_peers=lambda: self.switch.fast_peers,
                                  post=self._post, on_word=self._sleeve_word, wake=self._wake_timer, settings=settings)
        self._wake = asyncio.Event()
        self._outbox: asyncio.Queue[tuple[str, Message]] = asyncio.Queue(maxsize=OUTBOX_LIMIT)
        self._tasks: set[asyncio.Task] = set()

    # -- life cycle ----------------------------------------------------------------------
    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        fast = await self.fastpath.start(self.mode, self._on_heartbeats, self.sleeve.learn)
        self.switch = OverlaySwitch(self.mode if fast else "sleeve", fast_mtu=self.fastpath.mtu)
        self.sleeve.start(self.loop)
        await self.bus.subscribe(subjects.event("topology"), self._on_topology)
        await self.bus.subscribe(subjects.event("overlay_connection"), self._on_connection)
        await self.bus.subscribe(subjects.event("overlay_message"), self._on_message)
        for coro in (self._timer_loop(), self._outbox_loop(), self._resync_loop()):
            self._tasks.add(self.loop.create_task(coro))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.sleeve.stop()
        await self.fastpath.stop()

    # -- connections -----------------------------------------------------------------------
    def add(self, conn: OverlayConnection, resumed: bool) -> None:
        """A connection the gossip service announced (again, for a snapshot: then nothing
        happens). Only connections that offer sleeve are run."""
        if self.sleeve.has(conn.conn_uid) or OVERLAY not in conn.overlays:
            return
        now = self.loop.time()
        self._switch(self.switch.add(conn.peer, conn.conn_uid, fp.ip_of(conn.remote_addr), conn.overlays,
                                     conn.session_key, now))
        self.sleeve.add(conn, resumed)
        self._wake.set()

    def remove(self, conn_uid: int) -> None:
        self.sleeve.remove(conn_uid)
        self._switch(self.switch.remove(conn_uid))

    async def _on_connection(self, msg: BusMsg) -> None:
        try:
            ev = OverlayConnectionEvent.model_validate_json(msg.data)
        except ValueError as exc:
            log.warning("malformed overlay connection event: %s", exc)
            return
        if ev.kind == "added":
            self.add(ev.connection, resumed=False)
        else:
            self.remove(ev.connection.conn_uid)

    async def _on_message(self, msg: BusMsg) -> None:
        try:
            self.sleeve.control(OverlayMessageEvent.model_validate_json(msg.data))
        except ValueError as exc:
            log.warning("malformed overlay message event: %s", exc)

    async def _on_topology(self, msg: BusMsg) -> None:
        try:
            self.sleeve.topology(TopologyEvent.model_validate_json(msg.data))
        except ValueError as exc:
            log.warning("malformed topology event: %s", exc)

    async def _resync_loop(self) -> None:
        """Snapshots at start (retried until the gossip service answers), then every RESYNC_S."""
        first = True
        while True:
            try:
                topo = await self.bus.request(subjects.request("gossip", "peers"), PeersRequest(), TopologyEvent,
                                              timeout=BUS_TIMEOUT_S)
                snap = await self.bus.request(subjects.request("gossip", "connections"), OverlayConnectionsRequest(),
                                              OverlayConnectionsReply, timeout=BUS_TIMEOUT_S)
            except BusError as exc:
                log.debug("gossip snapshot not available yet: %s", exc)
                await asyncio.sleep(SNAPSHOT_RETRY_S)
                continue
            self.sleeve.topology(topo)
            live = {c.conn_uid for c in snap.connections}
            for uid in [u for u in self.sleeve.connections if u not in live] if not first else []:
                self.remove(uid)
            for conn in snap.connections:
                self.add(conn, resumed=True)
            if first:  # entries the previous process left for gone peers
                self._switch(self.switch.prune_previous())
            first = False
            await asyncio.sleep(RESYNC_S)

    # -- the switch's inputs and actions -------------------------------------------------------
    def _on_heartbeats(self, heartbeats: list[tuple[fp.Heartbeat, float]]) -> None:
        """Heartbeats read as they arrived (the fastpath shell's eager reader)."""
        self._heard(heartbeats)
        self._wake.set()

    def _heard(self, heartbeats: list[tuple[fp.Heartbeat, float]]) -> None:
        for hb, at in heartbeats:
            self._switch(self.switch.heartbeat(hb.src, hb.conn_uid, hb.hearing, at, hb.idle))

    def _sleeve_word(self, conn: OverlayConnection, word: SleeveStatus) -> None:
        actions = self.switch.sleeve(conn.conn_uid, word)
        told = any(isinstance(a, (Report, Fail)) for a in actions)
        if word.failed:
            log.warning("sleeve to %s(%s) failed%s", conn.peer, conn.nickname,
                        f": {word.failed}" if told else f" ({word.failed}); the fastpath carries it")
        elif told:
            log.info("%s to %s(%s): established, mtu=%s encrypted=%s", word.overlay, conn.peer, conn.nickname,
                     word.mtu or "?", word.encrypted)
        self._switch(actions)

    def _switch(self, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, (Report, Fail)):
                self._post(*gossip_request(a))
            elif isinstance(a, Switched):
                self._log_switch(a)
            else:
                self.fastpath.apply(a)

    def _log_switch(self, a: Switched) -> None:
        conn = self.sleeve.connections.get(a.conn_uid)
        nickname = conn.nickname if conn else "?"
        if a.overlay == FASTPATH:
            path = self.switch.paths.get(a.conn_uid)
            log.info("%s(%s): traffic on the fastpath (%s, mtu %d)", a.peer, nickname, path.address if path else "?",
                     self.switch.fast_mtu)
        elif a.previous == FASTPATH:
            log.warning("%s(%s): fastpath heartbeats stopped: traffic back on sleeve", a.peer, nickname)

    # -- the gossip service ------------------------------------------------------------------
    def _post(self, subject: str, msg: Message) -> None:
        try:
            self._outbox.put_nowait((subject, msg))
        except asyncio.QueueFull:
            log.warning("dropping %s for the gossip service: outbox full", type(msg).__name__)

    async def _outbox_loop(self) -> None:
        while True:
            subject, msg = await self._outbox.get()
            try:
                await self.bus.request(subject, msg, Ok, timeout=BUS_TIMEOUT_S)
            except BusError as exc:
                log.warning("%s not delivered to the gossip service: %s", type(msg).__name__, exc)

    # -- timers --------------------------------------------------------------------------
    def _wake_timer(self) -> None:
        self._wake.set()

    async def _timer_loop(self) -> None:
        traffic_at = float("-inf")
        while True:
            deadline = min(self.sleeve.next_deadline(), self.switch.next_deadline() or float("inf"))
            await sleep_or_wake(self._wake, deadline - self.loop.time())
            now = self.loop.time()
            self._heard(self.fastpath.drain())  # before any verdict: nothing heard is left unread
            self.sleeve.tick(now, early=IDLE_HEARTBEAT_S)  # its heartbeats ride on the fastpath's beat
            if now - traffic_at >= HEARTBEAT_S:  # the switch's pace follows the traffic
                traffic_at, frames = now, self.fastpath.frames()
                if frames is not None:
                    self._switch(self.switch.traffic(frames, now))
            self._switch(self.switch.tick(now))
            self.fastpath.listen(eager=not self.switch.settled(now))

    # -- status --------------------------------------------------------------------------
    def report(self) -> dict:
        """The Router fields of Weave's /report that the datapath knows (overlay_report.py)."""
        fast = FastpathStatus(self.switch.fast_mtu, self.switch.fast_peers) if self.mode != "sleeve" else None
        return router_report(self.sleeve.overlay.macs(), self.sleeve.routes.nicknames, self.sleeve.capture_stats(),
                             self.sleeve.pcap_ifname, fast, time.time() - self.loop.time())

    def drop_counts(self) -> dict[str, int]:
        return self.sleeve.drop_counts()


def gossip_request(a: Report | Fail) -> tuple[str, Message]:
    """The gossip service's request that tells it the switch's verdict."""
    if isinstance(a, Report):
        return subjects.request("gossip", "overlay_established"), OverlayEstablished(
            peer=a.peer, conn_uid=a.conn_uid, overlay=a.overlay, mtu=a.mtu, encrypted=a.encrypted)
    return subjects.request("gossip", "overlay_failed"), OverlayFailed(peer=a.peer, conn_uid=a.conn_uid,
                                                                      reason=a.reason)
