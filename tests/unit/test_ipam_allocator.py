"""One allocator core on its own: requests, errors, claims, status lines, snapshots,
ticks, shutdown; gossip it must refuse without changing anything."""
import pytest

from shared.weave.peer_name import PeerName
from services.ipam import codec, status
from services.ipam.actions import Broadcast, Persist, Reply, SendUnicast
from services.ipam.address import CIDR, Range, parse_cidr, parse_ip, parse_subnet
from services.ipam.allocator import Allocator
from services.ipam.config import AllocatorConfig, parse_init_mode
from services.ipam.entry import RingEntry
from services.ipam.errors import DifferentRangeError, DifferentSeedsError, RequestError, RingError
from services.ipam.messages import IpamGossip, RingUpdate, SpaceRequest, SpaceRequestDenied
from services.ipam.ring import Ring
from shared.errors import RemoteProtocolError

US, PEER, OTHER = PeerName.parse("aa:00:00:00:00:01"), PeerName.parse("aa:00:00:00:00:02"), PeerName.parse("aa:00:00:00:00:03")
UNIVERSE = parse_subnet("10.32.0.0/24")
U0 = UNIVERSE.addr


def alloc(seed=(US,), **kw) -> Allocator:
    a = Allocator(AllocatorConfig(US, 7, UNIVERSE, "h1", seed=tuple(seed), **kw))
    a.start(now=0)
    return a


def reply(actions, request_id=None):
    replies = [a for a in actions if isinstance(a, Reply) and (request_id is None or a.request_id == request_id)]
    assert len(replies) == 1, actions
    return replies[0]


def test_seeded_allocator_allocates_lowest_host_address():
    a = alloc()
    assert str(reply(a.allocate(1, "c1", now=1)).result) == "10.32.0.1/24"
    assert str(reply(a.allocate(2, "c2", "10.32.0.128/25", now=1)).result) == "10.32.0.129/25"
    assert str(reply(a.allocate(3, "c1", now=1)).result) == "10.32.0.1/24"  # same container: same address
    assert a.lookup("c1") == [parse_cidr("10.32.0.1/24")] and a.lookup("c2", "10.32.0.0/24") == [parse_cidr("10.32.0.129/25")]
    assert a.lookup("c1", "10.32.0.128/25") == []
    with pytest.raises(RequestError):
        a.lookup("c1", "10.32.0.1/25")


def test_allocation_persists_and_reports_free_space():
    a = alloc()
    actions = a.allocate(1, "c1", now=1)
    assert any(isinstance(x, Persist) for x in actions)
    assert a.ring.entries == [RingEntry(U0, US, 1, 255)]  # free count reported, version bumped
    assert a.snapshot()["owned"] == {"c1": {"is_container": True, "cidrs": ["10.32.0.1/24"]}}


def test_a_delta_holds_what_changed_since_the_last_one_and_a_failed_write_gives_it_back():
    a = alloc()
    a.allocate(1, "c1", now=1)
    first = a.take_delta()
    assert (first["peer_name"], first["range"], first["ring"]) == (str(US), "10.32.0.0/24", a.ring.to_dict())
    assert first["owned"] == {"c1": {"is_container": True, "cidrs": ["10.32.0.1/24"]}}
    assert a.take_delta()["owned"] == {}, "taken: not in the next delta"
    a.delta_not_saved(first)
    a.delete(2, "c1", now=2)
    assert a.take_delta()["owned"] == {"c1": None}, "given back, and now released"


@pytest.mark.parametrize("method,args,code,message", [
    ("allocate", ("c", "10.32.0.0/33"), "bad_request", "invalid CIDR"),
    ("allocate", ("c", "10.32.0.1/24"), "bad_request", "not all zero"),
    ("allocate", ("c", "10.32.0.0/31"), "bad_request", "smaller than minimum size 4"),
    ("allocate", ("c", "192.168.0.0/24"), "out_of_range", "range 192.168.0.0/24 out of bounds: 10.32.0.0/24"),
    ("claim", ("c", "10.32.0.5"), "bad_request", "invalid CIDR"),
    ("release", ("nobody", parse_ip("10.32.0.5")), "not_found", "Free: address 10.32.0.5 not found for nobody"),
    ("release", ("c0", "10.32.0.300"), "bad_request", "invalid IP address"),
    ("release", ("c0", "10.32.0.2"), "not_found", "Free: address 10.32.0.2 not found for c0"),
    ("delete", ("nobody",), "not_found", "Delete: no addresses for nobody"),
    ("rmpeer", ("nonsense",), "unknown_peer", "unknown peer 'nonsense'"),
    ("rmpeer", ("h1",), "bad_request", "ourself"),
])
def test_bad_requests_fail_clearly_and_change_nothing(method, args, code, message):
    a = alloc()
    a.allocate("keep", "c0", now=1)
    before = (a.snapshot(), list(a.space.ours), list(a.space.free))
    r = reply(getattr(a, method)("req", *args, now=2))
    assert not r.ok and r.error.code == code and message in r.error.message
    assert (a.snapshot(), a.space.ours, a.space.free) == before


def test_release_and_delete():
    a = alloc()
    a.allocate(1, "c1", now=1)
    a.allocate(2, "c1", "10.32.0.128/25", now=1)
    assert reply(a.release(3, "c1", "10.32.0.1", now=2)).ok
    assert a.lookup("c1") == [parse_cidr("10.32.0.129/25")]
    assert reply(a.delete(4, "c1", now=2)).ok
    assert a.lookup("c1") == [] and a.space.num_owned() == 0
    assert str(reply(a.allocate(5, "c2", now=3)).result) == "10.32.0.1/24"  # freed addresses are reused


def test_no_container_id_files_under_the_address():
    a = alloc()
    assert str(reply(a.allocate(1, "_", now=1)).result) == "10.32.0.1/24"
    assert reply(a.delete(2, "10.32.0.1", now=1)).ok


@pytest.mark.parametrize("first,second,ok,code", [
    ("c1", "c1", True, None),
    ("c1", "c2", False, "in_use"),
    ("c1", "_", True, None),
    ("_", "c2", False, "in_use"),
])
def test_claim_table(first, second, ok, code):
    a = alloc()
    assert reply(a.claim(1, first, "10.32.0.7/24", now=1)).ok
    r = reply(a.claim(2, second, "10.32.0.7/24", now=1))
    assert r.ok is ok and (r.error is None or r.error.code == code)
    assert str(reply(a.allocate(3, "next", now=1)).result) == "10.32.0.1/24"  # claimed one is skipped


def test_claim_outside_the_universe_is_just_recorded():
    a = alloc()
    assert reply(a.claim(1, "c", "192.168.1.1/24", now=1)).ok
    assert a.lookup("c") == [parse_cidr("192.168.1.1/24")] and a.space.num_owned() == 0
    assert reply(a.claim(3, "c", "192.168.1.1/24", now=1)).ok, "claiming it again (a re-attach) is a no-op"
    assert a.lookup("c") == [parse_cidr("192.168.1.1/24")]
    assert reply(a.delete(2, "c", now=1)).ok


def test_claim_from_an_unreachable_owner_gives_up_after_five_tries():
    a = alloc(seed=(PEER,))  # PEER owns everything and is not reachable
    assert a.claim(1, "c", "10.32.0.9/24", now=0) == []
    for t in range(1, 4):
        assert a.tick(now=5 * t) == []
    r = reply(a.tick(now=20))
    assert r.error.code == "owned_by_other_peer"
    assert r.error.message == "address 10.32.0.9/24 is owned by other peer aa:00:00:00:00:02"
    assert a.pending_claims == []


def test_claim_from_a_reachable_owner_asks_for_that_address_and_fails_when_denied():
    a = alloc(seed=(PEER,))
    a.set_peers([PEER], nicknames={PEER: "h2"}, now=0)
    actions = a.claim(1, "c", "10.32.0.9/24", now=0)
    assert actions == [SendUnicast(PEER, SpaceRequest(Range(parse_ip("10.32.0.9"), parse_ip("10.32.0.10"))))]
    assert status.report(a)["PendingClaims"] == [{"Ident": "c", "CIDR": {"Addr": "10.32.0.9", "PrefixLen": 24}}]
    r = reply(a.on_gossip_unicast(PEER, SpaceRequestDenied(Range(parse_ip("10.32.0.9"), parse_ip("10.32.0.10"))), now=1))
    assert r.error.message == "address 10.32.0.9/24 is owned by other peer aa:00:00:00:00:02 (h2)"


def test_claim_waits_for_a_ring_unless_told_not_to():
    a = Allocator(AllocatorConfig(US, 7, UNIVERSE, quorum=2))
    a.start(now=0)
    assert [x for x in a.claim(1, "c", "10.32.0.9/24", now=0) if isinstance(x, Reply)] == []
    assert reply(a.claim(2, "d", "10.32.0.10/24", no_error_on_unknown=True, now=0)).ok
    assert status.status(a) == "awaiting consensus (quorum: 2, known: 1)"


def test_status_lines():
    a = Allocator(AllocatorConfig(US, 7, UNIVERSE, quorum=2))
    a.start(now=0)
    assert status.status(a) == "idle"
    a.prime("p", now=0)
    assert status.status(a) == "awaiting consensus (quorum: 2, known: 1)"
    assert status.report(a)["Paxos"] == {"Elector": True, "KnownNodes": 1, "Quorum": 2}
    o = Allocator(AllocatorConfig(US, 7, UNIVERSE, observer=True, quorum=0))
    o.start(now=0)
    o.prime("p", now=0)
    assert status.status(o) == "priming"
    b = alloc()
    assert status.status(b) == "ready"
    c = alloc(seed=(PEER,))
    c.allocate(1, "c", now=0)
    assert status.status(c) == status.UNREACHABLE
    c.set_peers([PEER], now=0)
    assert status.status(c) == "waiting for IP range grant from peers"


def test_report_shape():
    a = alloc(seed=(US, PEER))
    a.set_peers([PEER], nicknames={PEER: "h2"}, now=0)
    a.allocate(1, "c", now=0)
    assert status.report(a) == {
        "Paxos": None, "Range": "10.32.0.0/24", "RangeNumIPs": 256, "ActiveIPs": 1,
        "DefaultSubnet": "10.32.0.0/24",
        "Entries": [
            {"Token": "10.32.0.0", "Size": 128, "Peer": str(US), "Nickname": "h1", "IsKnownPeer": True, "Version": 1},
            {"Token": "10.32.0.128", "Size": 128, "Peer": str(PEER), "Nickname": "h2", "IsKnownPeer": True,
             "Version": 0}],
        "PendingClaims": None, "PendingAllocates": None}


def test_prime_replies_once_there_is_a_ring():
    a = Allocator(AllocatorConfig(US, 7, UNIVERSE, quorum=1))
    a.start(now=0)
    assert reply(a.prime("p", now=0)).ok  # quorum 1: consensus at once
    assert a.ring.seeds == [US]


def test_election_broadcasts_and_retries_every_tick():
    a = Allocator(AllocatorConfig(US, 7, UNIVERSE, quorum=2))
    a.start(now=0)
    actions = a.allocate(1, "c", now=1)
    assert [type(x) for x in actions] == [Broadcast]
    assert a.next_deadline() == 5
    assert a.tick(now=4) == []
    (b,) = a.tick(now=5)
    assert isinstance(b, Broadcast) and b.state.paxos[next(iter(b.state.paxos))].promise.round == 2
    assert a.next_deadline() == 10


def test_ring_from_a_peer_completes_pending_requests():
    a = Allocator(AllocatorConfig(US, 7, UNIVERSE, quorum=2))
    a.start(now=0)
    a.allocate(1, "c", now=0)
    ring = Ring(UNIVERSE.range().start, UNIVERSE.range().end, PEER)
    ring.claim_for_peers([US, PEER])
    actions = a.on_gossip_broadcast(PEER, codec.encode_gossip(IpamGossip(0, {PEER: "h2"}, None, ring)), now=1)
    assert str(reply(actions).result) == "10.32.0.1/24"
    assert a.nicknames == {US: "", PEER: "h2"} and not a.awaiting_consensus and a.paxos is None


def test_ring_less_broadcast_is_answered_with_our_ring():
    a = alloc()
    actions = a.on_gossip_broadcast(PEER, IpamGossip(3, {PEER: "h2"}, {}, None), now=1)
    (u,) = actions
    assert u.dest == PEER and isinstance(u.message, RingUpdate) and u.message.state.ring == a.ring
    assert a.on_gossip(IpamGossip(3, {PEER: "h2"}, {}, None), now=1) == []  # periodic gossip: no answer


def test_space_request_donates_and_always_sends_the_ring_back():
    a = alloc()
    a.set_peers([PEER], now=0)
    actions = a.on_gossip_unicast(PEER, SpaceRequest(UNIVERSE.range()), now=1)
    unicast, broadcast, persist = actions
    assert unicast.dest == PEER and unicast.message.state.ring.owner(parse_ip("10.32.0.200")) == PEER
    assert isinstance(broadcast, Broadcast) and isinstance(persist, Persist)
    assert a.ring.owned_ranges() == [Range(U0, parse_ip("10.32.0.128"))]
    assert a.space.num_free() == 128


def test_space_request_we_cannot_serve_is_denied():
    a = alloc()
    a.claim(1, "c", "10.32.0.9/24", now=0)
    asked = Range(parse_ip("10.32.0.9"), parse_ip("10.32.0.10"))
    denied, ring_update = a.on_gossip_unicast(PEER, SpaceRequest(asked), now=1)
    assert denied == SendUnicast(PEER, SpaceRequestDenied(asked)) and isinstance(ring_update.message, RingUpdate)


@pytest.mark.parametrize("ring,error", [
    (Ring(U0, U0 + 256, PEER, [RingEntry(U0, PEER, 0, 256)], [PEER]), DifferentSeedsError),
    (Ring(U0, U0 + 128, PEER, [RingEntry(U0, PEER, 0, 128)], [US]), DifferentRangeError),
    (Ring(U0, U0 + 256, PEER, [RingEntry(U0, PEER, 5, 256)], [US]), RingError),
])
def test_refused_rings_change_nothing(ring, error):
    a = alloc()
    a.allocate(1, "c", now=0)
    before = (a.snapshot(), dict(a.nicknames))
    with pytest.raises(error) as e:
        a.on_gossip_broadcast(PEER, IpamGossip(0, {PEER: "h2"}, None, ring), now=1)
    assert isinstance(e.value, RemoteProtocolError)
    assert (a.snapshot(), a.nicknames) == before
    assert a.tick(now=1) == []  # nothing half-done left behind


def test_different_seeds_message_names_both_sides():
    a = alloc()
    with pytest.raises(DifferentSeedsError) as e:
        a.on_gossip(IpamGossip(0, {}, None, Ring(U0, U0 + 256, PEER, [RingEntry(U0, PEER, 0, 256)], [PEER])), now=1)
    assert e.value.message == ("IP allocation was seeded by different peers (received: [aa:00:00:00:00:02], "
                               "ours: [aa:00:00:00:00:01(h1)])")


def test_malformed_gossip_bytes_are_remote_errors():
    a = alloc()
    with pytest.raises(RemoteProtocolError):
        a.on_gossip(b"\x01\x02", now=0)
    with pytest.raises(RemoteProtocolError):
        a.on_gossip_unicast(PEER, b"\x09", now=0)


def test_snapshot_restore_and_discard():
    a = alloc()
    a.allocate(1, "c1", now=0)
    snap = a.snapshot()
    b = Allocator(AllocatorConfig(US, 99, UNIVERSE, "h1", seed=(PEER,)))
    assert b.restore(snap)
    b.start(now=0)  # the persisted ring wins over the seed
    assert b.ring.seeds == [US] and b.lookup("c1") == [parse_cidr("10.32.0.1/24")]
    assert str(reply(b.allocate(2, "c2", now=0)).result) == "10.32.0.2/24"
    other_name = Allocator(AllocatorConfig(PEER, 1, UNIVERSE))
    other_range = Allocator(AllocatorConfig(US, 1, parse_subnet("10.33.0.0/24")))
    assert not other_name.restore(snap) and other_name.ring.empty() and other_name.lookup("c1") == []
    assert not other_range.restore(snap) and other_range.ring.empty()
    assert not alloc().restore({"version": 1, "ring": {"bogus": 1}})


def test_shutdown_hands_ranges_to_a_live_peer_and_cancels_requests():
    a = Allocator(AllocatorConfig(US, 7, UNIVERSE, "h1", seed=(US, PEER)))
    a.start(now=0)
    a.set_peers([PEER, OTHER], now=0)
    a.claim(1, "c", "10.32.0.200/24", now=0)  # pending: asked PEER
    actions = a.shutdown(now=1)
    assert reply(actions, 1).error.code == "cancelled"
    assert {e.peer for e in a.ring.entries} == {PEER} and a.ring.entries[0].version == 100
    assert any(isinstance(x, Broadcast) for x in actions)
    assert reply(a.allocate(2, "late", now=2)).error.code == "cancelled"


def test_cancel_and_container_died():
    a = alloc(seed=(PEER,))
    a.allocate("x", "c", now=0)
    assert reply(a.cancel("x", now=1)).error.message == "Allocate request for c cancelled"
    b = alloc()
    b.allocate(1, "c", now=0)
    b.container_died("c", now=10)
    b.tick(now=15)
    assert b.lookup("c")  # not yet: 30 s grace
    b.tick(now=45)
    assert b.lookup("c") == [] and b.space.num_owned() == 0


def test_nicknames_of_vanished_peers_are_forgotten_unless_in_the_ring():
    a = alloc(seed=(US, PEER))
    a.set_peers([PEER, OTHER], nicknames={PEER: "h2", OTHER: "h3"}, now=0)
    a.set_peers([], now=1)
    assert a.nicknames == {US: "h1", PEER: "h2"}


@pytest.mark.parametrize("text,targets,mode", [
    ("consensus=3", 0, (False, (), 2)), ("consensus", 2, (False, (), 2)), ("consensus=5", 0, (False, (), 3)),
    ("observer", 2, (True, (), 0)), ("seed=::1,::2", 0, (False, (PeerName(1), PeerName(2)), 1)),
])
def test_parse_init_mode(text, targets, mode):
    m = parse_init_mode(text, targets)
    assert (m.observer, m.seed, m.quorum) == mode


@pytest.mark.parametrize("bad", ["consensus=0", "seed=", "observer=1", "magic"])
def test_parse_init_mode_rejects(bad):
    with pytest.raises(ValueError):
        parse_init_mode(bad, 1)


def test_config_checks():
    with pytest.raises(ValueError):
        AllocatorConfig(US, 1, CIDR(parse_ip("10.32.0.1"), 24))
    with pytest.raises(ValueError):
        AllocatorConfig(US, 1, UNIVERSE, default_subnet=parse_subnet("10.33.0.0/24"))
    assert AllocatorConfig(US, 1, UNIVERSE).default_subnet == UNIVERSE
