"""In-process cluster for the dns service: real `DnsApp`s, each on its own MemoryBus
(one per host, as each host has its own nats-server), joined by a stand-in for the
gossip services that delivers every MeshSend to the other hosts as mesh would, and
answers `weave.gossip.peers` with a topology the test controls. DNS queries are real
UDP/TCP packets to each app's listener on 127.0.0.1."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

from dnslib import DNSRecord

from services.dns import codec
from services.dns.config import DnsConfig
from services.dns.service import DnsApp
from shared import subjects
from shared.bus import BusMsg, MemoryBroker, MemoryBus
from shared.clock import RealClock
from shared.config import DnsSettings, LaunchConfig, ServiceConfig
from shared.http import HttpRouter
from shared.metrics import new_registry
from shared.schemas.datapath import ContainerEvent, ContainersReply, ContainersRequest
from shared.schemas.mesh import DNS_CHANNEL, MeshReceive, MeshSend, PeerInfo, PeersRequest, TopologyEvent
from shared.service import ServiceContext

ZERO = "00:00:00:00:00:00"


def peer_name(i: int) -> str:
    return f"aa:00:00:00:00:{i:02x}"


class Host:
    def __init__(self, index: int, root: Path, incarnation: str = "run-1", clock=None, journal=None,
                 **settings) -> None:
        self.index, self.name = index, peer_name(index)
        self.state_dir = root / f"h{index}"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.resolv_conf = self.state_dir / "resolv.conf"
        self.resolv_conf.write_text("")
        self.broker = MemoryBroker()
        self.incarnation = incarnation
        self.settings = dict(settings)
        self.app: DnsApp | None = None
        self.bus: MemoryBus | None = None
        self.uid = 1
        self.clock = clock or RealClock()
        self.journal = journal
        """A Journal for the next start (None: the app's own)."""
        self.attached: list[ContainerEvent] | None = None
        """What this host's stand-in datapath answers to `containers` (None: no datapath)."""

    async def start(self) -> DnsApp:
        launch = LaunchConfig(state_dir=self.state_dir, name=self.name, nickname=f"h{self.index}")
        config = DnsConfig(listen_host="127.0.0.1", listen_port=0, domain="weave.local.", ttl_s=1,
                           settings=DnsSettings(resolv_conf=self.resolv_conf,
                                                **{"upstream_timeout_s": 0.5, **self.settings}))
        self.bus = MemoryBus(self.broker, "dns")
        ctx = ServiceContext("dns", ServiceConfig(service="dns", launch=launch, metrics_port=0,
                                                   settings=DnsSettings()), self.bus,
                             new_registry(), self.clock, HttpRouter())
        if self.attached is not None:
            await self.bus.serve(subjects.request("datapath", "containers"), ContainersRequest, self._containers)
        self.app = DnsApp(config, incarnation=self.incarnation, journal=self.journal)
        await self.app.start(ctx)
        return self.app

    async def _containers(self, _: ContainersRequest) -> ContainersReply:
        return ContainersReply(containers=tuple(self.attached or ()))

    def disk(self) -> dict[str, bytes]:
        """The state dir's files now: what a process killed at this instant leaves."""
        return {p.name: p.read_bytes() for p in self.state_dir.iterdir() if p.is_file()}

    async def crash(self, disk: dict[str, bytes]) -> None:
        """Stop the app and put the state dir back as `disk` (taken at the crash point):
        a SIGKILL then, as far as the next start can tell."""
        await self.stop()
        for p in self.state_dir.iterdir():
            if p.is_file() and p.name != "resolv.conf":
                p.unlink()
        for name, data in disk.items():
            (self.state_dir / name).write_bytes(data)

    async def stop(self) -> None:
        await self.app.stop()
        await self.bus.close()
        self.app = None

    @property
    def port(self) -> int:
        return self.app.server.port

    async def query(self, name: str, qtype: str = "A", tcp: bool = False) -> DNSRecord:
        raw = await asyncio.to_thread(DNSRecord.question(name, qtype).send, "127.0.0.1", self.port, tcp, 3)
        return DNSRecord.parse(raw)

    async def addresses(self, name: str) -> list[str]:
        return sorted(str(rr.rdata) for rr in (await self.query(name)).rr)


class Mesh:
    """The hosts' gossip services, reduced to what the dns owner sees of them."""

    def __init__(self) -> None:
        self.hosts: list[Host] = []
        self.sent: list[tuple[str, MeshSend]] = []
        self.connected = True

    async def join(self, host: Host) -> None:
        self.hosts.append(host)
        gossip = MemoryBus(host.broker, "gossip")

        async def on_send(msg: BusMsg, src: Host = host) -> None:
            send = MeshSend.model_validate_json(msg.data)
            self.sent.append((src.name, send))
            if self.connected:
                await self._deliver(src, send)

        async def on_peers(_: PeersRequest, h: Host = host) -> TopologyEvent:
            return self.topology(h)

        await gossip.subscribe(subjects.mesh_out(DNS_CHANNEL), on_send)
        await gossip.serve(subjects.request("gossip", "peers"), PeersRequest, on_peers)
        host.gossip_bus = gossip

    async def _deliver(self, src: Host, send: MeshSend) -> None:
        if send.kind == "unicast":
            return
        targets = [h for h in self.hosts if h is not src and h.app is not None
                   and (send.dst is None or h.name == str(send.dst))]
        origin = src.name if send.kind == "broadcast" else ZERO
        for h in targets:
            await h.gossip_bus.publish(subjects.mesh_in(DNS_CHANNEL),
                                       MeshReceive(kind=send.kind, src=origin, payload=send.payload))

    def topology(self, host: Host, removed: tuple[str, ...] = ()) -> TopologyEvent:
        peers = tuple(PeerInfo(name=h.name, nickname=f"h{h.index}", uid=h.uid, short_id=h.index,
                               reachable=True, address="" if h is host else f"192.168.77.{h.index}")
                      for h in self.hosts)
        return TopologyEvent(ourself=host.name, peers=peers, removed=removed)

    async def publish_topology(self, removed: tuple[str, ...] = ()) -> None:
        for h in self.hosts:
            if h.app is not None:
                await h.gossip_bus.publish(subjects.event("topology"), self.topology(h, removed))

    async def gossip_all(self) -> None:
        """Every running host gossips its full state to every other (a periodic round)."""
        for h in self.hosts:
            if h.app is not None:
                await self._deliver(h, MeshSend(kind="gossip", payload=codec.encode(h.app.ns.gossip(h.clock.now()))))

    def leave(self, host: Host) -> None:
        self.hosts.remove(host)


async def wait_for(cond, timeout: float = 5.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await cond()
        if last:
            return last
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")
