"""The datapath shell's pure and bus-facing parts without devices: ADDR parsing, DNS
names, the records file, topology routes, the IPAM client against an in-memory ipam
(and without one), address rollback, and the overlay shell's mapping of forwarder
actions to gossip-service requests (control messages as tag 7 or compat tags,
established with the MTU, failed)."""
from __future__ import annotations

import asyncio
from ipaddress import IPv4Interface, IPv4Network

import pytest

from services.datapath import overlay_shell as osh
from services.datapath.containers import Containers, check_fqdn, parse_addr_args
from services.datapath.ipam_client import Ipam, IpamUnavailable
from services.datapath.netns import BadRequest, DatapathError
from services.datapath.records import ContainerRecord, ExposeRecord, Records
from services.datapath.sleeve.forwarder import CONNECTION_ESTABLISHED, Failed, ForwarderState
from services.datapath.topology import TopologyRoutes
from shared import subjects
from shared.bus import MemoryBroker, MemoryBus
from shared.errors import WeaveError
from shared.schemas import HealthReply, HealthRequest, Ok
from shared.schemas.ipam import AllocateReply, AllocateRequest, ClaimRequest, ReleaseRequest
from shared.schemas.mesh import (OverlayConnection, OverlayEstablished, OverlayFailed, OverlayMessageEvent,
                                 OverlaySend, PeerInfo, TopologyEvent)

from shared.weave.peer_name import PeerName

H1, H2, H3 = "aa:00:00:00:00:01", "aa:00:00:00:00:02", "aa:00:00:00:00:03"
P = PeerName.parse


# -- arguments and records ---------------------------------------------------------------
def test_addr_arguments():
    assert parse_addr_args(()) == [None]
    assert parse_addr_args(("10.2.1.1/24", "ip:10.2.1.2/24", "net:10.3.0.0/16", "net:default")) == [
        IPv4Interface("10.2.1.1/24"), IPv4Interface("10.2.1.2/24"), IPv4Network("10.3.0.0/16"), None]
    assert parse_addr_args(("net:10.3.0.7/16",)) == [IPv4Network("10.3.0.0/16")]
    for bad in ("10.2.1.1", "net:10.3.0.0/33", "net:nonsense", "224.1.1.1/4", "x"):
        with pytest.raises(BadRequest):
            parse_addr_args((bad,))


def test_dns_names():
    assert check_fqdn("web.weave.local.") == "web.weave.local" and check_fqdn("") == ""
    for bad in ("a..b", "-a.b", "a_b.c", "x" * 64 + ".local", ("a." * 127) + "b"):
        with pytest.raises(BadRequest):
            check_fqdn(bad)


def test_records_survive_a_reload_and_a_corrupt_file_is_empty(tmp_path):
    recs = Records(tmp_path)
    rec = ContainerRecord("c1", "/var/run/netns/c1", 4026532001, "02:00:00:00:00:01", ("10.99.0.1/16",),
                          "web.weave.local", {"app": "web"}, "prod", False, ("10.99.0.1/16",))
    recs.put(rec)
    recs.set_expose(ExposeRecord(("10.99.255.1/16",), "h.weave.local"))
    again = Records(tmp_path)
    again.load()
    assert again.containers == {rec.netns_inode: rec} and again.expose.cidrs == ("10.99.255.1/16",)
    assert again.by_id("c1") == rec and again.update(rec.netns_inode, cidrs=()).cidrs == ()
    recs.path.write_text("{not json")
    broken = Records(tmp_path)
    broken.load()
    assert broken.containers == {} and broken.expose == ExposeRecord()


def test_topology_routes_follow_events():
    routes = TopologyRoutes()
    peers = routes.peers
    removed = routes.update(TopologyEvent(
        ourself=H1, peers=tuple(PeerInfo(name=n, nickname=n[-1], uid=1, short_id=1, reachable=True)
                                for n in (H1, H2, H3)),
        removed=("aa:00:00:00:00:09",), unicast={H2: H2, H3: H2}, broadcast={H1: (H2,), H3: ()}))
    assert routes.peers is peers and peers == {P(H1), P(H2), P(H3)}
    assert all(type(p) is PeerName for p in (*peers, routes.unicast(P(H3)), *routes.broadcast(P(H1))))
    assert routes.unicast(P(H3)) == P(H2) and routes.unicast(0x1) is None
    assert routes.broadcast(P(H1)) == [P(H2)] and routes.broadcast(P(H2)) == []
    assert removed == [0xAA0000000009] and routes.unicast(0xAA0000000003) == P(H2)  # the sleeve asks with ints


# -- IPAM over the bus -----------------------------------------------------------------
class FakeIpam:
    """The ipam service's bus API, in memory: allocate hands out 10.32.0.N/12, claims
    are recorded (another ident's address is a conflict), release frees."""

    def __init__(self, refuse_allocate_after: int | None = None) -> None:
        self.held: dict[str, set[str]] = {}
        self.requests: list = []
        self.refuse_after = refuse_allocate_after

    async def serve(self, bus: MemoryBus) -> None:
        await bus.serve(subjects.request("ipam", "allocate"), AllocateRequest, self.allocate)
        await bus.serve(subjects.request("ipam", "claim"), ClaimRequest, self.claim)
        await bus.serve(subjects.request("ipam", "release"), ReleaseRequest, self.release)
        await bus.serve(subjects.health("ipam"), HealthRequest, self.health)

    async def allocate(self, req: AllocateRequest) -> AllocateReply:
        self.requests.append(req)
        n = sum(len(v) for v in self.held.values())
        if self.refuse_after is not None and n >= self.refuse_after:
            raise WeaveError("range full", code="unavailable")
        cidr = f"10.32.0.{n + 1}/12"
        self.held.setdefault(req.ident, set()).add(cidr)
        return AllocateReply(cidr=cidr)

    async def claim(self, req: ClaimRequest) -> Ok:
        self.requests.append(req)
        if any(req.cidr in v for k, v in self.held.items() if k != req.ident):
            raise WeaveError(f"address {req.cidr} is in use", code="conflict")
        self.held.setdefault(req.ident, set()).add(req.cidr)
        return Ok()

    async def release(self, req: ReleaseRequest) -> Ok:
        held = self.held.get(req.ident, set())
        gone = {c for c in held if req.addr is None or c.split("/")[0] == req.addr}
        if not gone:
            raise WeaveError("not found", code="not_found")
        self.held[req.ident] = held - gone
        return Ok()

    async def health(self, _: HealthRequest) -> HealthReply:
        return HealthReply(service="ipam", pid=1, healthy=True, uptime_s=1.0)


async def _buses(fake: FakeIpam | None):
    broker = MemoryBroker()
    if fake is not None:
        await fake.serve(MemoryBus(broker, "ipam"))
    return MemoryBus(broker, "datapath")


async def test_ipam_client_speaks_the_ipam_bus_api():
    fake = FakeIpam()
    ipam = Ipam(await _buses(fake))
    assert await ipam.allocate("c1", None) == "10.32.0.1/12"
    assert await ipam.allocate("weave:expose", "10.32.0.0/24") == "10.32.0.2/12"
    assert await ipam.claim("c2", "10.99.0.1/16") is True
    with pytest.raises(DatapathError, match="IPAM: address 10.99.0.1/16 is in use") as err:
        await ipam.claim("c3", "10.99.0.1/16")
    assert err.value.code == "conflict"
    await ipam.release("c1", "10.32.0.1")
    await ipam.release("c9")  # not held: logged, not raised
    assert fake.held["c1"] == set()
    expose, claim = fake.requests[1], fake.requests[2]
    assert (expose.subnet, expose.is_container) == ("10.32.0.0/24", False)
    assert claim.no_error_on_unknown is True and claim.is_container is True


async def test_without_ipam_explicit_addresses_work_and_defaults_say_why():
    ipam = Ipam(await _buses(None))
    assert await ipam.claim("c1", "10.99.0.1/16") is False
    with pytest.raises(IpamUnavailable, match="IPAM is not running.*explicit address") as err:
        await ipam.allocate("c1", None)
    assert err.value.code == "unavailable"
    await ipam.release("c1")


async def test_ipam_saying_unavailable_is_not_mistaken_for_no_ipam():
    ipam = Ipam(await _buses(FakeIpam(refuse_allocate_after=0)))
    with pytest.raises(DatapathError, match="IPAM: range full"):
        await ipam.allocate("c1", None)


async def test_a_failed_allocation_releases_what_this_request_got(tmp_path):
    fake = FakeIpam(refuse_allocate_after=2)
    containers = Containers(Records(tmp_path), Ipam(await _buses(fake)), publish=None)
    with pytest.raises(DatapathError, match="range full"):
        await containers._addresses("c1", [IPv4Interface("10.99.0.1/16"), None, None])
    assert fake.held["c1"] == set()


# -- the overlay shell's bus side, with in-memory sockets --------------------------------
class FakeUdp:
    gro = False  # no segment trains offered (tests/unit/test_sleeve_train.py has them)

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple, bool]] = []
        self.drops = {}

    def send(self, payload, addr, df):
        self.sent.append((bytes(payload), addr, df))

    def forget(self, ip):
        pass


def shell_with(conn: OverlayConnection) -> osh.OverlayShell:
    shell = osh.OverlayShell(bus=None, ourself=P(H1), host="192.168.77.1", port=6783, pcap_ifname="x")
    shell.loop = asyncio.get_running_loop()
    shell.udp = FakeUdp()
    shell.add(conn, resumed=False)
    return shell


def posted(shell) -> list:
    out = []
    while not shell._outbox.empty():
        out.append(shell._outbox.get_nowait()[1])
    return out


def conn(compat=False, outbound=True) -> OverlayConnection:
    return OverlayConnection(peer=H2, nickname="h2", conn_uid=77, outbound=outbound, remote_addr="192.168.77.2:6783",
                             local_addr="192.168.77.1:41000", overlays=("sleeve",), compat=compat)


async def test_shell_maps_forwarder_actions_to_gossip_requests():
    shell = shell_with(conn())
    (offer,) = posted(shell)
    assert offer == OverlaySend(peer=H2, conn_uid=77, tag=7, payload=bytes([0, 0x80, 0x01]))
    assert shell.udp.sent and all(addr == ("192.168.77.2", 6783) and df for _, addr, df in shell.udp.sent)

    ack = OverlayMessageEvent(peer=H2, conn_uid=77, tag=7, payload=bytes([0, CONNECTION_ESTABLISHED]))
    await shell._on_message(type("M", (), {"data": ack.model_dump_json().encode()})())
    fwd, _ = shell.conns[77]
    assert fwd.state is ForwarderState.ESTABLISHED
    assert OverlayEstablished(peer=H2, conn_uid=77, overlay="sleeve", mtu=0, encrypted=False) in posted(shell)

    shell._run([Failed(P(H2), "timed out waiting for UDP heartbeat")], 0.0)
    assert posted(shell) == [OverlayFailed(peer=H2, conn_uid=77, reason="timed out waiting for UDP heartbeat")]
    shell.remove(77)
    assert shell.conns == {} and shell.overlay.forwarders == {}


async def test_compat_connections_use_raw_tags_and_no_offload_offer():
    shell = shell_with(conn(compat=True, outbound=False))
    assert posted(shell) == [] and shell.udp.sent == []  # inbound: no address until a heartbeat
    assert osh._sub_message(conn(compat=True), 1, b"") == (1, b"")
    assert osh._sub_message(conn(), 1, b"") is None  # raw tags only on compat connections
    assert osh._sub_message(conn(), 7, bytes([1, 1])) is None  # index 1: no such overlay
    assert osh._sub_message(conn(), 7, bytes([0, 3, 5, 0x9e])) == (3, bytes([5, 0x9e]))


async def test_report_has_weaves_router_fields_from_the_mac_cache():
    import re
    import time

    shell = shell_with(conn())
    shell.routes.nicknames = {P(H1): "h1", P(H2): "h2"}
    now = shell.loop.time()
    shell.overlay.frame_router.macs.add(bytes.fromhex("56a6ca7fbf1e"), P(H1), now - 5)
    shell.overlay.frame_router.macs.add_forced(bytes.fromhex("aa0000000002"), P(H2), now)
    r = shell.report()
    assert list(r) == ["OverlayDiagnostics", "Interface", "CaptureStats", "MACs"]
    assert r["OverlayDiagnostics"] == {"sleeve": None}  # mode sleeve: no fastpath part
    assert r["Interface"] == "x (via AF_PACKET)"
    assert r["CaptureStats"] == {"PacketsDropped": 0, "PacketsIfDropped": 0, "PacketsReceived": 0}
    first, second = r["MACs"]  # oldest first
    assert first["Mac"] == "56:a6:ca:7f:bf:1e" and first["Name"] == H1 and first["NickName"] == "h1"
    assert second == {**second, "Mac": "aa:00:00:00:00:02", "Name": H2, "NickName": "h2"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", second["LastSeen"])
    seen = time.mktime(time.strptime(second["LastSeen"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    assert abs(seen - time.time()) < 5


def test_gossip_merges_the_datapaths_router_fields_in_weaves_order():
    import json

    from services.gossip.status import merge_router
    from tests.reference import reference_dir

    sample = json.loads((reference_dir() / "samples" / "report-h1.json").read_text())["Router"]
    ours = {k: v for k, v in sample.items() if k not in ("OverlayDiagnostics", "Interface", "CaptureStats", "MACs")}
    extra = {k: sample[k] for k in ("MACs", "CaptureStats", "Interface", "OverlayDiagnostics")}
    merged = merge_router(ours, extra)
    assert list(merged) == list(sample) and merged == sample
    assert merge_router(ours, {}) is ours
