"""The fastpath's asyncio shell: the kernel VXLAN device (fastpath.py) brought up,
its heartbeat socket read, and the OverlaySwitch's kernel actions carried out.

It decides nothing: `start` says whether the device is up (and its overlay MTU); the
switch says which FDB entries to set or remove, which learnt entries to flush, which
sources to allow, what to prune and which heartbeats to send, and `apply` does it.
Netlink and iptables work is blocking, so it runs in order on one worker
(asyncio.to_thread), off the event loop; heartbeats are written at once (a
non-blocking AF_PACKET send). What a flush removed (the MACs the device had learnt
behind a peer) goes back on the event loop to `on_flushed(peer, macs)`.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable

from services.datapath import fastpath as fp
from services.datapath.host_iptables import HostIptables
from services.datapath.overlay_switch import AllowSource, FlushLearnt, Prune, SendHeartbeat, SetFdb
from shared.weave.peer_name import PeerName

log = logging.getLogger("weave.datapath.fastpath")

NET_DEV = "/proc/net/dev"


class FastpathShell:
    def __init__(self, ourself: PeerName, host: str, bridge: str, bridge_port: str) -> None:
        """`ourself`: our peer name (our bridge's MAC, which heartbeats come from)."""
        self.ourself, self.host, self.bridge, self.bridge_port = ourself, host, bridge, bridge_port
        self.index: int | None = None
        """The device's ifindex once it is up; None: no fastpath on this host."""
        self.mtu = 0
        """The overlay MTU it offers (underlay MTU - fastpath.OVERHEAD)."""
        self.netfilter: HostIptables | None = None
        """The source filter (host_iptables.py), if it could be set."""
        self.hb: fp.HeartbeatSocket | None = None
        self._work: asyncio.Queue[tuple[Callable[[], object], Callable[[object], None] | None]] = asyncio.Queue()
        self._tasks: list[asyncio.Task] = []
        self._on_flushed: Callable[[PeerName, list[str]], None] = lambda peer, macs: None
        self._heartbeats = 0
        """Heartbeats sent and received since `traffic` last looked."""
        self._on_heartbeats: Callable[[list[tuple[fp.Heartbeat, float]]], None] = lambda heartbeats: None
        self._eager = False
        """The event loop reads each heartbeat as it arrives (see `listen`)."""
        self._drained_at = float("-inf")
        self._frames: int | None = None
        """The device's frame count when `traffic` last looked."""
        self._net_dev_fd: int | None = None

    async def start(self, mode: str, on_heartbeats: Callable[[list[tuple[fp.Heartbeat, float]]], None],
                    on_flushed: Callable[[PeerName, list[str]], None]) -> bool:
        """Bring the device up for `mode` (in mode sleeve, remove one a previous run left).
        True if the fastpath runs; False: sleeve only (the reason is logged).
        `on_heartbeats` gets what `drain` gives, as heartbeats arrive while `listen` is eager."""
        self._on_flushed, self._on_heartbeats = on_flushed, on_heartbeats
        if mode == "sleeve":
            if await asyncio.to_thread(fp.destroy_device, self.bridge_port):
                log.info("datapath mode sleeve: fastpath device %s removed", fp.DEVICE)
            return False
        try:
            self.mtu = fp.fastpath_mtu(await asyncio.to_thread(fp.underlay_mtu, self.host))
            self.index = await asyncio.to_thread(fp.ensure_device, self.host, self.bridge, self.bridge_port)
            self.hb = fp.HeartbeatSocket()
        except (OSError, ValueError) as exc:  # e.g. no vxlan support: sleeve only
            log.warning("fastpath unavailable (%s): sleeve only", exc)
            self.index = None
            return False
        await self._source_filter()
        self.listen(eager=True)
        self._tasks.append(asyncio.get_running_loop().create_task(self._worker()))
        log.info("fastpath %s on udp %d (vni %#x, mtu %d), mode %s", fp.DEVICE, fp.PORT, fp.VNI, self.mtu, mode)
        return True

    def listen(self, eager: bool) -> None:
        """`eager`: wake for each heartbeat as it arrives (while a path is being proven,
        each is answered at once); else they wait in the socket for `drain`, called at the
        switch's beat, and a host at rest wakes once a beat whatever its number of peers."""
        if self.hb is None or eager == self._eager:
            return
        loop = asyncio.get_running_loop()
        if eager:
            loop.add_reader(self.hb.fileno(), lambda: self._on_heartbeats(self.drain()))
        else:
            loop.remove_reader(self.hb.fileno())
        self._eager = eager

    def drain(self) -> list[tuple[fp.Heartbeat, float]]:
        """The peers' heartbeats waiting, each with the event loop's time of its arrival
        (the kernel's receive time, carried over from the wall clock, and never before the
        last drain, which would have read it: a step of the wall clock moves nothing)."""
        if self.hb is None:
            return []
        now = asyncio.get_running_loop().time()
        since, self._drained_at = self._drained_at, now
        got = self.hb.recv_all()
        if not got:
            return []
        self._heartbeats += len(got)
        wall = time.time()
        return [(hb, min(now, max(since, now - (wall - at)))) for hb, at in got]

    def frames(self) -> int | None:
        """Frames the device carried besides heartbeats since the last call; None when it
        cannot tell (the first call, no device)."""
        if self.index is None:
            return None
        try:
            frames = fp.device_packets(self._net_dev())
        except OSError:  # the next look opens it afresh
            frames = None
            self._close_net_dev()
        heartbeats, self._heartbeats = self._heartbeats, 0
        last, self._frames = self._frames, frames
        if frames is None or last is None:
            return None
        return frames - last - heartbeats

    def _net_dev(self) -> str:
        """/proc/net/dev, read afresh from offset 0 of a descriptor kept open (it is
        read every beat: no open, close or path objects each time)."""
        if self._net_dev_fd is None:
            self._net_dev_fd = os.open(NET_DEV, os.O_RDONLY | os.O_CLOEXEC)
        chunks, offset = [], 0
        while chunk := os.pread(self._net_dev_fd, 65536, offset):
            chunks.append(chunk)
            offset += len(chunk)
        return b"".join(chunks).decode("ascii", "replace")

    async def _source_filter(self) -> None:
        try:
            self.netfilter = await asyncio.to_thread(HostIptables)
            await asyncio.to_thread(self.netfilter.ensure_source_filter, fp.PORT)
        except OSError as exc:  # HostIptablesError too
            self.netfilter = None
            log.warning("fastpath source filter not set (%s): %s accepts VXLAN from anyone", exc, fp.DEVICE)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.hb is not None:
            self.listen(eager=False)
            self.hb.close()
        self._close_net_dev()

    def _close_net_dev(self) -> None:
        if self._net_dev_fd is not None:
            fd, self._net_dev_fd = self._net_dev_fd, None
            try:
                os.close(fd)
            except OSError:
                pass

    def apply(self, action: SendHeartbeat | SetFdb | FlushLearnt | AllowSource | Prune) -> None:
        """Carry out one of the switch's kernel actions (in order with the others)."""
        index, nf = self.index, self.netfilter
        if index is None:
            return
        if isinstance(action, SendHeartbeat):
            self.hb.send(fp.encode_heartbeat(self.ourself, action.peer, action.conn_uid, action.hearing, action.idle))
            self._heartbeats += 1
        elif isinstance(action, SetFdb):
            self._queue(lambda: fp.fdb_set(index, action.mac, action.ip, action.present))
        elif isinstance(action, FlushLearnt):
            self._queue(lambda: fp.forget(index, action.ip), lambda macs: self._on_flushed(action.peer, macs))
        elif isinstance(action, AllowSource):
            if nf is not None:
                self._queue(lambda: nf.allow_source(action.ip, action.present))
        elif isinstance(action, Prune):
            self._queue(lambda: fp.prune(index, set(action.keep), set(action.flood)))
            if nf is not None:
                self._queue(lambda: nf.prune_sources(set(action.keep)))

    def _queue(self, op: Callable[[], object], done: Callable[[object], None] | None = None) -> None:
        self._work.put_nowait((op, done))

    async def _worker(self) -> None:
        while True:
            op, done = await self._work.get()
            try:
                result = await asyncio.to_thread(op)
            except Exception as exc:  # one failed FDB write must not stop the later ones
                log.warning("fastpath fdb update failed: %s", exc)
                continue
            if done is not None:
                done(result)
