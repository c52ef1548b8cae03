"""The datapath's pure and bus-facing parts without devices: ADDR parsing, DNS names,
the records file, topology routes, the IPAM client against an in-memory ipam (and
without one), address rollback, and, without a loop, how the sleeve meets the mesh
(control messages as tag 7 or compat tags; its forwarders' verdicts through the
overlay switch to gossip-service requests: established with the MTU, failed), PMTU
per host, and the /report Router fields."""
from __future__ import annotations

from ipaddress import IPv4Interface, IPv4Network

import pytest

from services.datapath import overlay_shell as osh
from services.datapath import sleeve_mesh
from services.datapath.containers import Containers, check_fqdn, parse_addr_args
from services.datapath.ipam_client import Ipam, IpamUnavailable
from services.datapath.netns import BadRequest, DatapathError
from services.datapath.records import ContainerRecord, ExposeRecord, Records
from services.datapath.overlay_report import FastpathStatus, router_report
from services.datapath.overlay_switch import (FASTPATH, TIMEOUT_S, Fail, FlushLearnt, OverlaySwitch, Report,
                                              SleeveStatus)
from services.datapath.sleeve import frame as fr
from services.datapath.sleeve.forwarder import (CONNECTION_ESTABLISHED, Failed, ForwarderState, MTUVerified,
                                                SendControl, SendPacket)
from services.datapath.sleeve.mac_cache import MacCache
from services.datapath.sleeve.overlay import SleeveOverlay
from services.datapath.topology import TopologyRoutes
from shared import subjects
from shared.bus import MemoryBroker, MemoryBus
from shared.errors import WeaveError
from shared.schemas import HealthReply, HealthRequest, Ok
from shared.schemas.ipam import AllocateReply, AllocateRequest, ClaimRequest, ReleaseRequest
from shared.schemas.mesh import (OverlayConnection, OverlayEstablished, OverlayFailed, OverlaySend, PeerInfo,
                                 TopologyEvent)

from shared.weave.peer_name import PeerName
from tests.unit.test_datapath_offload import MAC_A, MAC_B, tcp_frame

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
    before = routes.peers
    removed = routes.update(TopologyEvent(
        ourself=H1, peers=tuple(PeerInfo(name=n, nickname=n[-1], uid=1, short_id=1, reachable=True)
                                for n in (H1, H2, H3)),
        removed=("aa:00:00:00:00:09",), unicast={H2: H2, H3: H2}, broadcast={H1: (H2,), H3: ()}))
    peers = routes.peers
    assert peers == {P(H1), P(H2), P(H3)}
    assert before == frozenset(), "replaced, never changed in place: who holds the old set keeps it"
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


# -- the sleeve and the mesh: control messages and verdicts, without a loop -----------------
def conn(compat=False, outbound=True) -> OverlayConnection:
    return OverlayConnection(peer=H2, nickname="h2", conn_uid=77, outbound=outbound, remote_addr="192.168.77.2:6783",
                             local_addr="192.168.77.1:41000", overlays=("sleeve",), compat=compat)


def sleeve_for(c: OverlayConnection):
    """The sleeve core and the switch as the shells set them up for connection `c`."""
    overlay = SleeveOverlay(P(H1), frozenset({P(H1), P(H2)}), TopologyRoutes())
    addr = ("192.168.77.2", 6783) if c.outbound else None
    fwd = overlay.make_forwarder(c.peer, c.conn_uid, c.outbound, addr, c.session_key, offload=not c.compat)
    switch = OverlaySwitch("sleeve")
    switch.add(c.peer, c.conn_uid, "192.168.77.2", c.overlays, c.session_key, 0.0)
    return overlay, fwd, switch


def told(switch: OverlaySwitch, fwd, actions) -> list:
    """What gossip hears of a forwarder's actions: its words, through the switch."""
    out = []
    for a in actions:
        word = sleeve_mesh.sleeve_word(fwd, a)
        if word is not None:
            out += [osh.gossip_request(x)[1] for x in switch.sleeve(fwd.conn_uid, word)]
    return out


def test_forwarder_actions_become_gossip_requests():
    c = conn()
    overlay, fwd, switch = sleeve_for(c)
    out = overlay.confirm(fwd, 0.0)
    (offer,) = [sleeve_mesh.control_to_mesh(c, a) for a in out if isinstance(a, SendControl)]
    assert offer == OverlaySend(peer=H2, conn_uid=77, tag=7, payload=bytes([0, 0x80, 0x01]))
    sent = [a for a in out if isinstance(a, SendPacket)]
    assert sent and all(p.addr == ("192.168.77.2", 6783) and p.df for p in sent)

    sub = sleeve_mesh.control_from_mesh(c, 7, bytes([0, CONNECTION_ESTABLISHED]))
    acts = fwd.control_message(*sub, 0.1)
    assert fwd.state is ForwarderState.ESTABLISHED
    assert told(switch, fwd, acts) == [OverlayEstablished(peer=H2, conn_uid=77, overlay="sleeve", mtu=0,
                                                          encrypted=False)]
    assert osh.gossip_request(Report(P(H2), 77, "sleeve", 0, False))[0] == subjects.request(
        "gossip", "overlay_established")

    failed = told(switch, fwd, [Failed(P(H2), "timed out waiting for UDP heartbeat")])
    assert failed == [OverlayFailed(peer=H2, conn_uid=77, reason="timed out waiting for UDP heartbeat")]
    assert osh.gossip_request(Fail(P(H2), 77, "x"))[0] == subjects.request("gossip", "overlay_failed")
    overlay.stop(fwd)
    assert overlay.connections == {} and overlay.forwarders == {}


def test_compat_connections_use_raw_tags_and_no_offload_offer():
    c = conn(compat=True, outbound=False)
    overlay, fwd, _ = sleeve_for(c)
    out = overlay.confirm(fwd, 0.0)
    assert out == []  # inbound: no address until a heartbeat; compat: no offload offer
    assert sleeve_mesh.control_from_mesh(conn(compat=True), 1, b"") == (1, b"")
    assert sleeve_mesh.control_from_mesh(conn(), 1, b"") is None  # raw tags only on compat connections
    assert sleeve_mesh.control_from_mesh(conn(), 7, bytes([1, 1])) is None  # index 1: no such overlay
    assert sleeve_mesh.control_from_mesh(conn(), 7, bytes([0, 3, 5, 0x9e])) == (3, bytes([5, 0x9e]))
    assert sleeve_mesh.control_to_mesh(c, SendControl(P(H2), 1, b"\x05")) == OverlaySend(
        peer=H2, conn_uid=77, tag=1, payload=b"\x05")


def test_the_sleeves_word_after_an_mtu_or_a_rename():
    c = conn()
    overlay, fwd, switch = sleeve_for(c)
    overlay.confirm(fwd, 0.0)
    assert sleeve_mesh.sleeve_word(fwd, MTUVerified(P(H2), 1438)) is None, "not established, not resumed"
    fwd.control_message(*sleeve_mesh.control_from_mesh(c, 7, bytes([0, CONNECTION_ESTABLISHED])), 0.1)
    word = sleeve_mesh.sleeve_word(fwd, MTUVerified(P(H2), 1438))
    assert word == SleeveStatus("sleeve", 0, False, True)
    assert sleeve_mesh.renamed(fwd, "sleeve") is None, "still the plain sleeve"
    assert sleeve_mesh.renamed(fwd, "fast-sleeve") == SleeveStatus("sleeve", 0, False, True)


def test_pmtu_reaches_every_forwarder_to_that_host():
    overlay = SleeveOverlay(P(H1), frozenset({P(H1), P(H2), P(H3)}), TopologyRoutes())
    a = overlay.make_forwarder(P(H2), 1, True, ("192.168.77.2", 6783))
    b = overlay.make_forwarder(P(H3), 2, True, ("192.168.77.3", 6783))
    for fwd in (a, b):
        overlay.confirm(fwd, 0.0)
    assert overlay.uses_host("192.168.77.2") and not overlay.uses_host("192.168.77.9")
    overlay.msg_too_big(("192.168.77.2", 6783), 1400, 1.0)
    assert a.mtu < 1400 and b.mtu == fr.DEFAULT_MTU
    overlay.topology_changed(frozenset({P(H1), P(H3)}), [P(H2)])
    assert P(H2) not in overlay.peers


def test_after_a_fallback_the_sleeve_unicasts_to_the_macs_the_fastpath_carried():
    """The cause of the stall when a pair falls back: the sleeve never saw the frames the
    fastpath carried (isolated ports), so it floods frames to those MACs, and a full-size
    TCP segment (DF, as big as the fastpath took it) is too big for sleeve: a flood of
    it is dropped with no frag-needed, so TCP's retransmissions vanish until something
    else teaches the sleeve the MAC. The fastpath's flush hands the MACs it had learnt
    behind the peer to the sleeve, which then unicasts and answers frag-needed (TCP
    resends at once, in segments that fit)."""
    infos = tuple(PeerInfo(name=n, nickname=n[-1], uid=1, short_id=1, reachable=True) for n in (H1, H2, H3))
    routes = TopologyRoutes()
    routes.update(TopologyEvent(ourself=H1, peers=infos, removed=(), unicast={H2: H2, H3: H3},
                                broadcast={H1: (H2, H3)}))
    switch = OverlaySwitch("auto")
    overlay = SleeveOverlay(P(H1), routes.peers, sleeve_mesh.SleeveNextHops(routes, lambda: switch.fast_peers))
    fwd = overlay.make_forwarder(P(H2), 77, True, ("192.168.77.2", 6783))
    overlay.confirm(fwd, 0.0)
    overlay.msg_too_big(("192.168.77.2", 6783), 1500, 0.0)  # the sleeve's path MTU, as an underlay of 1500 gives
    switch.add(P(H2), 77, "192.168.77.2", (FASTPATH, "sleeve"), None, 0.0)
    switch.heartbeat(P(H2), 77, True, 0.1)
    assert switch.fast_peers == {P(H2)}
    (flush,) = [a for a in switch.tick(0.1 + TIMEOUT_S) if isinstance(a, FlushLearnt)]
    assert flush == FlushLearnt("192.168.77.2", P(H2)) and switch.fast_peers == frozenset()

    segment = tcp_frame(bytes(8000))  # MAC_A (ours) -> MAC_B (behind h2), DF
    assert overlay.capture(segment, 2.0) == []  # flooded: too big for sleeve, dropped unannounced
    assert overlay.drop_counts()["df_too_big_broadcast"] == 1
    overlay.learn_macs(flush.peer, [MAC_B], 2.0)  # what the flush found in the VXLAN device's table
    (frag_needed,) = overlay.capture(segment, 2.1)
    icmp = bytes(frag_needed.frame)
    assert icmp[:12] == MAC_A + MAC_B and icmp[23] == 1 and icmp[34:36] == bytes([3, 4])  # ICMP 3/4 to the sender
    assert 0 < int.from_bytes(icmp[40:42], "big") <= fwd.mtu


def test_report_has_weaves_router_fields_from_the_mac_cache():
    import re
    import time

    macs = MacCache()
    now = 1000.0
    macs.add(bytes.fromhex("56a6ca7fbf1e"), P(H1), now - 5)
    macs.add_forced(bytes.fromhex("aa0000000002"), P(H2), now)
    nicknames = {P(H1): "h1", P(H2): "h2"}
    r = router_report(macs.entries(), nicknames, (0, 0), "x", None, time.time() - now)
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
    fast = router_report({}, {}, (7, 1), "x", FastpathStatus(1450, [P(H3), P(H2)]), 0.0)
    assert fast["OverlayDiagnostics"]["weave-py-vxlan"] == {"Device": "vxlan-6784", "MTU": 1450, "Peers": [H2, H3]}
    assert fast["CaptureStats"] == {"PacketsDropped": 1, "PacketsIfDropped": 0, "PacketsReceived": 7}


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
