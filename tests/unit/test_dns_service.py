"""The dns service in an in-process cluster (tests/unit/dns_cluster.py): bus API,
gossip between hosts, topology, restarts with the snapshot, container events, and
real DNS packets to each host's listener."""
from __future__ import annotations

import json

import pytest
from dnslib import RCODE

from services.dns import codec
from services.dns.entry import DnsEntry, GossipData
from services.dns.http import api_router
from shared.weave.peer_name import PeerName
from shared import subjects
from shared.bus import BusError
from shared.schemas.datapath import ContainerEvent
from shared.schemas.dns import AddRequest, ChangeReply, ListReply, ListRequest, LookupReply, LookupRequest, \
    RemoveRequest
from shared.http import Request
from shared.schemas.mesh import DNS_CHANNEL, MeshReceive
from tests.unit.dns_cluster import Host, Mesh, peer_name, wait_for
from tests.unit.dns_responder import Responder


@pytest.fixture
async def cluster(tmp_path):
    mesh = Mesh()
    hosts = [Host(i, tmp_path) for i in (1, 2, 3)]
    for h in hosts:
        await mesh.join(h)
    for h in hosts:
        await h.start()
    yield mesh, hosts
    for h in hosts:
        if h.app is not None:
            await h.stop()


async def add(host: Host, name: str, ip: str, container: str = "c1") -> ChangeReply:
    return await host.bus.request(subjects.request("dns", "add"), AddRequest(container_id=container, ip=ip, fqdn=name),
                                  ChangeReply)


async def remove(host: Host, **fields) -> ChangeReply:
    return await host.bus.request(subjects.request("dns", "remove"), RemoveRequest(**fields), ChangeReply)


async def test_a_name_added_on_one_host_resolves_on_the_others(cluster):
    mesh, (h1, h2, h3) = cluster
    reply = await add(h1, "web.weave.local", "10.32.0.5")
    assert [(e.hostname, e.address, e.origin, e.version) for e in reply.entries] == [
        ("web.weave.local.", "10.32.0.5", PeerName.parse(peer_name(1)), 0)]
    for h in (h2, h3):
        assert await wait_for(lambda h=h: h.addresses("web.weave.local")) == ["10.32.0.5"]
    assert await h3.addresses("WEB.weave.local") == ["10.32.0.5"], "lookups ignore case"
    assert await h2.addresses("web") == ["10.32.0.5"], "a single label is looked up in the domain"
    sent = [s for src, s in mesh.sent if src == h1.name and s.kind == "broadcast"]
    assert len(sent) == 1 and codec.decode(sent[0].payload).entries[0].hostname == "web.weave.local."


async def test_a_name_on_two_hosts_answers_both_and_removal_propagates(cluster):
    _, (h1, h2, h3) = cluster
    await add(h1, "db.weave.local", "10.32.0.1")
    await add(h2, "db.weave.local", "10.40.0.1", container="c2")
    await wait_for(lambda: _eq(h3.addresses("db.weave.local"), ["10.32.0.1", "10.40.0.1"]), what="both")
    gone = await remove(h1, container_id="c1")
    assert [e.tombstone > 0 for e in gone.entries] == [True]
    for h in (h1, h2, h3):
        await wait_for(lambda h=h: _eq(h.addresses("db.weave.local"), ["10.40.0.1"]), what="removal")
    await remove(h2, fqdn="db.weave.local")
    reply = await wait_for(lambda: _rcode(h1, "db.weave.local", RCODE.NXDOMAIN), what="NXDOMAIN")
    assert reply.header.ra == 1 and reply.header.aa == 0  # as miekg: an error reply is not authoritative


async def test_only_the_origin_removes_and_names_outside_the_domain_are_ignored(cluster):
    _, (h1, h2, _) = cluster
    await add(h1, "x.weave.local", "10.32.0.9")
    await wait_for(lambda: h2.addresses("x.weave.local"))
    assert (await remove(h2, fqdn="x.weave.local")).entries == ()
    assert (await add(h1, "x.example.com", "10.32.0.9")).entries == ()
    lookup = await h2.bus.request(subjects.request("dns", "lookup"), LookupRequest(name="x"), LookupReply)
    assert lookup == LookupReply(name="x.weave.local.", addresses=("10.32.0.9",))


async def test_bad_names_and_addresses_are_refused_on_the_bus(cluster):
    _, (h1, _, _) = cluster
    for name, ip, words in (("a" * 64 + ".weave.local", "10.0.0.1", "over 63 bytes"),
                            ("x..weave.local", "10.0.0.1", "empty label"),
                            ("web.weave.local", "fe80::1", "IPv6"),
                            ("web.weave.local", "10.0.0.300", "not an IPv4")):
        with pytest.raises(BusError) as exc:
            await add(h1, name, ip)
        assert exc.value.code == "bad_request" and words in exc.value.description


async def test_a_new_neighbour_gets_our_state_and_gone_peers_lose_theirs(cluster, tmp_path):
    mesh, (h1, h2, h3) = cluster
    await add(h1, "a.weave.local", "10.32.0.1")
    await add(h3, "c.weave.local", "10.32.0.3")
    h4 = Host(4, tmp_path)
    await mesh.join(h4)
    mesh.connected = False  # h4 hears nothing of the broadcasts: only catch-up gossip
    await h4.start()
    mesh.connected = True
    mesh.sent.clear()
    await mesh.publish_topology()

    async def gossiped_down():
        return sorted(src for src, s in mesh.sent if s.kind == "gossip" and str(s.dst) == h4.name)
    await wait_for(lambda: _eq(gossiped_down(), [h1.name, h2.name, h3.name]), what="each gossips down to h4")
    await wait_for(lambda: _eq(h4.addresses("c.weave.local"), ["10.32.0.3"]), what="h4 learns c")
    assert await h4.addresses("a.weave.local") == ["10.32.0.1"]
    mesh.leave(h3)
    await mesh.publish_topology(removed=(h3.name,))
    await wait_for(lambda: _rcode(h1, "c.weave.local", RCODE.NXDOMAIN), what="h3's entries dropped")
    await h4.stop()


async def test_gossip_from_unknown_peers_and_skewed_clocks_is_dropped(cluster):
    _, (h1, _, _) = cluster
    stranger = DnsEntry("c9", PeerName.parse("aa:00:00:00:00:99"), 0x0A000009, "s.weave.local.")
    friend = DnsEntry("c2", PeerName.parse(peer_name(2)), 0x0A000002, "f.weave.local.")
    now = int(h1.app.clock.now())
    for data in (GossipData.of(now, [stranger, friend]), GossipData.of(now - 3600, [friend.with_version(5)])):
        await h1.gossip_bus.publish(subjects.mesh_in(DNS_CHANNEL),
                                    MeshReceive(kind="gossip", src="00:00:00:00:00:00", payload=codec.encode(data)))
    await h1.gossip_bus.publish(subjects.mesh_in(DNS_CHANNEL),
                                MeshReceive(kind="broadcast", src=peer_name(2), payload=b"\x00garbage"))
    await wait_for(lambda: h1.addresses("f.weave.local"))
    listed = await h1.bus.request(subjects.request("dns", "list"), ListRequest(), ListReply)
    assert [(e.hostname, e.version) for e in listed.entries] == [("f.weave.local.", 0)]


async def test_our_entries_survive_a_restart_of_the_dns_process(cluster):
    mesh, (h1, h2, _) = cluster
    await add(h1, "keep.weave.local", "10.32.0.7")
    await add(h2, "other.weave.local", "10.32.0.8")
    await wait_for(lambda: _eq(h1.addresses("other.weave.local"), ["10.32.0.8"]))
    await h1.stop()
    await h1.start()
    assert await h1.addresses("keep.weave.local") == ["10.32.0.7"], "ours: from the snapshot"
    assert await h1.addresses("other.weave.local") == ["10.32.0.8"], "theirs: snapshot, fresh and same run"
    h2.app.channel.gossip_round()  # peers gossip our entry back to us
    await wait_for(lambda: _eq(h2.addresses("keep.weave.local"), ["10.32.0.7"]))
    listed = await h1.bus.request(subjects.request("dns", "list"), ListRequest(tombstones=True), ListReply)
    assert {(e.hostname, e.tombstone) for e in listed.entries} == {("keep.weave.local.", 0),
                                                                   ("other.weave.local.", 0)}
    assert not [s for src, s in mesh.sent if src == h1.name and s.kind == "broadcast"
                and any(e.tombstone for e in codec.decode(s.payload).entries)]


async def test_a_new_run_of_the_stack_tombstones_our_stale_entries(cluster):
    _, (h1, h2, h3) = cluster
    await add(h1, "stale.weave.local", "10.32.0.7")
    await wait_for(lambda: _eq(h2.addresses("stale.weave.local"), ["10.32.0.7"]))
    await h1.stop()
    h1.incarnation, h1.uid = "run-2", 2
    await h1.start()
    assert (await h1.query("stale.weave.local")).header.rcode == RCODE.NXDOMAIN
    h2.app.channel.gossip_round()
    for h in (h1, h2, h3):
        await wait_for(lambda h=h: _rcode(h, "stale.weave.local", RCODE.NXDOMAIN), what="stale name gone")


async def test_container_events_register_and_tombstone_names(cluster):
    _, (h1, h2, _) = cluster
    attached = ContainerEvent(kind="attached", container_id="wt-h1c1", cidrs=("10.32.0.4/12", "10.33.0.4/12"),
                              fqdn="app.weave.local")
    await h1.gossip_bus.publish(subjects.event("containers"), attached)
    await wait_for(lambda: _eq(h2.addresses("app.weave.local"), ["10.32.0.4", "10.33.0.4"]))
    unnamed = ContainerEvent(kind="attached", container_id="wt-h1c2", cidrs=("10.32.0.5/12",))
    await h1.gossip_bus.publish(subjects.event("containers"), unnamed)
    await h1.gossip_bus.publish(subjects.event("containers"),
                                ContainerEvent(kind="detached", container_id="wt-h1c1", cidrs=()))
    await wait_for(lambda: _rcode(h2, "app.weave.local", RCODE.NXDOMAIN))
    listed = await h1.bus.request(subjects.request("dns", "list"), ListRequest(tombstones=True), ListReply)
    assert {e.container_id for e in listed.entries} == {"wt-h1c1"}
    assert all(e.tombstone and e.version == 1 for e in listed.entries)


async def test_http_routes(cluster):
    _, (h1, h2, _) = cluster
    http = api_router(h1.app)

    async def call(method, path, query=None):
        return await http.dispatch(Request(method, path, query or {}, {}, b""))

    assert (await call("PUT", "/name/c1/10.32.0.1", {"fqdn": ["web.weave.local"]})).status == 204
    bad = await call("PUT", "/name/c1/::1", {"fqdn": ["web.weave.local"]})
    assert bad.status == 400 and "IPv6" in bad.body
    long = await call("PUT", "/name/c1/10.32.0.1", {"fqdn": [("a" * 60 + ".") * 5 + "weave.local"]})
    assert long.status == 400 and "the limit is 255" in long.body
    assert (await call("PUT", "/name/weave:extern/10.32.0.2", {"fqdn": ["ext.weave.local"]})).status == 204
    names = json.loads((await call("GET", "/name")).body)
    assert [(n["Hostname"], n["Addr"], n["Origin"]) for n in names] == [
        ("ext.weave.local.", "10.32.0.2", int(PeerName.parse(peer_name(1)))),
        ("web.weave.local.", "10.32.0.1", int(PeerName.parse(peer_name(1))))]
    assert (await call("GET", "/domain")).body == "weave.local."
    assert (await call("GET", "/dns-address")).body == "127.0.0.1"
    status = (await call("GET", "/status")).body
    assert status == ("        Service: dns\n         Domain: weave.local.\n       Upstream: none\n"
                      "            TTL: 1\n        Entries: 2\n")
    lines = (await call("GET", "/status/dns")).body
    assert lines == (f"ext          10.32.0.2       weave:extern {peer_name(1)}\n"
                     f"web          10.32.0.1                 c1 {peer_name(1)}\n")
    assert (await call("DELETE", "/name/weave:extern")).status == 204
    assert (await call("DELETE", "/name/c1/10.32.0.1", {"fqdn": ["other.weave.local"]})).status == 204
    report = json.loads((await call("GET", "/report")).body)["DNS"]
    assert report["Domain"] == "weave.local." and report["TTL"] == 1 and report["Upstream"] is None
    assert [(e["Hostname"], e["Tombstone"] > 0) for e in report["Entries"]] == [
        ("ext.weave.local.", True), ("web.weave.local.", False)]
    assert (await call("DELETE", "/name")).status == 204
    assert json.loads((await call("GET", "/report")).body)["DNS"]["Entries"][1]["Tombstone"] > 0
    metric = h1.app.ctx.registry.get_sample_value("weave_dns_entries")
    assert metric == 0.0
    await add(h1, "m.weave.local", "10.32.0.3")
    await add(h2, "n.weave.local", "10.32.0.4")
    assert h1.app.ctx.registry.get_sample_value("weave_dns_entries") == 1.0


async def test_external_names_go_upstream_over_udp_and_tcp(tmp_path):
    async with Responder({"ext.example.com.": "203.0.113.7"}) as upstream:
        mesh, host = Mesh(), Host(1, tmp_path, upstream_port=upstream.port)
        host.resolv_conf.write_text(f"nameserver {upstream.host}\n")
        await mesh.join(host)
        await host.start()
        try:
            for tcp in (False, True):
                reply = await host.query("ext.example.com", tcp=tcp)
                assert [str(rr.rdata) for rr in reply.rr] == ["203.0.113.7"]
            assert (await host.query("nothing.example.com")).header.rcode == RCODE.NXDOMAIN
            assert upstream.seen == ["ext.example.com.", "ext.example.com.", "nothing.example.com."]
            status = await api_router(host.app).dispatch(Request("GET", "/status", {}, {}, b""))
            assert f"Upstream: {upstream.host}\n" in status.body
            assert (await host.addresses("web")) == [], "single labels stay local: NXDOMAIN, not forwarded"
            assert len(upstream.seen) == 3
        finally:
            await host.stop()


async def _eq(coro, expected):
    return (await coro) == expected


async def _rcode(host: Host, name: str, rcode: int):
    reply = await host.query(name)
    return reply if reply.header.rcode == rcode else None


async def test_periodic_gossip_repairs_a_lost_broadcast(tmp_path):
    mesh = Mesh()
    hosts = [Host(i, tmp_path, gossip_interval_s=0.3) for i in (1, 2)]
    for h in hosts:
        await mesh.join(h)
        await h.start()
    h1, h2 = hosts
    try:
        mesh.connected = False
        await add(h1, "late.weave.local", "10.32.0.9")
        assert (await h2.query("late.weave.local")).header.rcode == RCODE.NXDOMAIN, "the broadcast was lost"
        mesh.sent.clear()
        mesh.connected = True
        assert await wait_for(lambda: h2.addresses("late.weave.local"), timeout=3.0) == ["10.32.0.9"]
        rounds = [s for src, s in mesh.sent if src == h1.name and s.kind == "gossip" and s.dst is None]
        assert rounds and codec.decode(rounds[0].payload).entries[0].hostname == "late.weave.local."
    finally:
        for h in hosts:
            await h.stop()


async def test_tombstones_are_purged_30_minutes_after_deletion(tmp_path):
    from shared.clock import ManualClock

    clock = ManualClock(start=1_700_000_000.0)
    mesh, host = Mesh(), Host(1, tmp_path, clock=clock)
    await mesh.join(host)
    await host.start()
    try:
        await add(host, "old.weave.local", "10.32.0.1")
        await remove(host, fqdn="old.weave.local")

        async def listed():
            reply = await host.bus.request(subjects.request("dns", "list"), ListRequest(tombstones=True), ListReply)
            return [e.hostname for e in reply.entries]
        clock.advance(29 * 60)
        await add(host, "new1.weave.local", "10.32.0.2")  # a change wakes the timer
        await wait_for(lambda: _eq(listed(), ["new1.weave.local.", "old.weave.local."]), what="kept at 29 min")
        clock.advance(2 * 60)
        await add(host, "new2.weave.local", "10.32.0.3")
        await wait_for(lambda: _eq(listed(), ["new1.weave.local.", "new2.weave.local."]), what="purged at 31 min")
    finally:
        await host.stop()


def test_config_from_launch_profiles_and_environment(tmp_path):
    from pathlib import Path

    from services.dns.config import DnsConfig
    from shared.config import LaunchConfig, for_service

    def config(launch: LaunchConfig, env: dict) -> DnsConfig:
        service = for_service("dns", launch, env)
        return DnsConfig.from_launch(service.launch, service.settings)

    prod = config(LaunchConfig(state_dir=tmp_path, dns_listen_address="172.17.0.1:5353"), {})
    assert (prod.listen_host, prod.listen_port, prod.address) == ("172.17.0.1", 5353, "172.17.0.1:5353")
    settings = prod.settings
    assert (settings.gossip_interval_s, settings.tombstone_timeout_s, settings.upstream_timeout_s) == (30.0, 1800.0, 5.0)
    assert settings.resolv_conf == Path("/etc/resolv.conf")
    test = config(LaunchConfig(state_dir=tmp_path, profile="test"), {"WEAVE_DNS_RESOLV_CONF": "/tmp/r.conf"})
    assert (test.settings.gossip_interval_s, test.settings.tombstone_timeout_s, test.settings.resolv_conf) == (
        5.0, 60.0, Path("/tmp/r.conf"))
    with pytest.raises(ValueError, match="expected ip:port"):
        config(LaunchConfig(state_dir=tmp_path, dns_listen_address="0.0.0.0"), {})
