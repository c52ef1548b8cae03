"""Ring CRDT: invariants, grants, ClaimForPeers, every merge rule and error, free
reports, transfer. Several rows are Weave's own ring_test.go cases."""
import random

import pytest

from shared.weave.peer_name import PeerName
from services.ipam.address import Range, parse_ip
from services.ipam.entry import RingEntry
from services.ipam.errors import (DifferentRangeError, DifferentSeedsError, InvalidRingError,
                                  RingError)
from services.ipam.ring import Ring
from shared.errors import LocalProtocolError

P1, P2, P3 = PeerName.parse("01:00:00:00:02:00"), PeerName.parse("02:00:00:00:02:00"), PeerName.parse("03:00:00:00:02:00")
START, END = parse_ip("10.0.0.0"), parse_ip("10.0.1.0")
DOT10, DOT245, DOT250, MIDDLE = (parse_ip(f"10.0.0.{i}") for i in (10, 245, 250, 128))


def E(token, peer, free=0, version=0):
    return RingEntry(token, peer, version, free)


def ring(peer, *entries, seeds=(), start=START, end=END):
    return Ring(start, end, peer, entries, seeds)


def no_allocs(_ranges):
    return False


def all_allocated(_ranges):
    return True


# -- invariants -------------------------------------------------------------------

@pytest.mark.parametrize("entries,code", [
    ([E(DOT245, P1), E(DOT10, P2)], "not_sorted"),
    ([E(DOT245, P1), E(DOT245, P2)], "token_repeated"),
    ([E(START, P1, free=257)], "too_much_free"),
    ([E(START, P1, free=10), E(DOT10, P2, free=247)], "too_much_free"),
])
def test_check_entries_errors(entries, code):
    r = ring(P1)
    with pytest.raises(InvalidRingError) as e:
        r.check_entries(entries)
    assert e.value.code == code


@pytest.mark.parametrize("token", [START, END])
def test_tokens_out_of_bounds(token):
    r = ring(P1, start=DOT10, end=DOT245)
    with pytest.raises(InvalidRingError) as e:
        r.check_entries([E(token, P1)])
    assert e.value.code == "token_out_of_range"


def test_assert_invariants_is_a_local_bug():
    r = ring(P1)
    r.entries = [E(DOT245, P1), E(DOT10, P2)]
    with pytest.raises(LocalProtocolError):
        r.assert_invariants()


# -- ClaimForPeers ------------------------------------------------------------------

@pytest.mark.parametrize("peers,expected", [
    ([P1], [(START, P1, 256)]),
    ([P2, P1, P2], [(START, P1, 128), (MIDDLE, P2, 128)]),
    ([P3, P2, P1], [(START, P1, 128), (MIDDLE, P2, 64), (parse_ip("10.0.0.192"), P3, 64)]),
    ([P1, P2, P3, PeerName(4)], [(START, PeerName(4), 64), (parse_ip("10.0.0.64"), P1, 64),
                                 (MIDDLE, P2, 64), (parse_ip("10.0.0.192"), P3, 64)]),
])
def test_claim_for_peers(peers, expected):
    r = ring(P1)
    r.claim_for_peers(peers)
    assert [(e.token, e.peer, e.free) for e in r.entries] == expected
    assert all(e.version == 0 for e in r.entries)
    assert r.seeds == sorted(set(peers))


def test_claim_for_peers_on_odd_sized_ring_and_more_peers_than_addresses():
    r = ring(P1, start=0, end=3)
    r.claim_for_peers([P1, P2, P3])
    assert [(e.token, e.peer, e.free) for e in r.entries] == [(0, P1, 1), (2, P2, 1)]


def test_claim_for_peers_needs_empty_ring():
    r = ring(P1, E(START, P1, 256))
    with pytest.raises(LocalProtocolError):
        r.claim_for_peers([P1])


def test_claim_for_peers_captured_universe():
    # consensus=3 in the capture settled on {h1, h3}: each gets a /13
    h1, h3 = PeerName.parse("aa:00:00:00:00:01"), PeerName.parse("aa:00:00:00:00:03")
    r = Ring(parse_ip("10.32.0.0"), parse_ip("10.48.0.0"), h1)
    r.claim_for_peers([h3, h1])
    assert [(e.token, e.peer, e.free) for e in r.entries] == [
        (parse_ip("10.32.0.0"), h1, 1 << 19), (parse_ip("10.40.0.0"), h3, 1 << 19)]


# -- GrantRangeToHost (Weave's TestGrantSimple / TestGrantSplit) ----------------------

def test_grant_simple():
    r1 = ring(P1, E(START, P1, 256))
    r1.grant_range_to_host(START, END, P2)
    assert r1.entries == [E(START, P2, 256, 1)]
    r2 = ring(P2, E(START, P2, 256, 1))
    r2.grant_range_to_host(DOT10, END, P1)
    assert r2.entries == [E(START, P2, 10, 2), E(DOT10, P1, 246)]
    r1.entries = [e.copy() for e in r2.entries]
    r1.grant_range_to_host(DOT245, END, P2)
    assert r1.entries == [E(START, P2, 10, 2), E(DOT10, P1, 235, 1), E(DOT245, P2, 11)]


def test_grant_spanning_a_live_token():
    r1 = ring(P1, E(START, P1, 10, 2), E(DOT10, P1, 235), E(DOT245, P1, 10))
    r1.grant_range_to_host(DOT10, END, P2)
    assert r1.entries == [E(START, P1, 10, 2), E(DOT10, P2, 235, 1), E(DOT245, P2, 10, 1)]


def test_grant_split_inserts_two_tokens():
    r1 = ring(P1, E(START, P1, 256))
    r1.grant_range_to_host(DOT10, DOT245, P2)
    assert r1.entries == [E(START, P1, 10, 1), E(DOT10, P2, 235), E(DOT245, P1, 11)]
    r1.entries = [E(START, P1, 10, 2), E(DOT10, P1, 118), E(MIDDLE, P1, 127)]
    r1.grant_range_to_host(DOT10, DOT245, P2)
    assert r1.entries == [E(START, P1, 10, 2), E(DOT10, P2, 118, 1), E(MIDDLE, P2, 117, 1), E(DOT245, P1, 11)]


@pytest.mark.parametrize("start,end", [(DOT10, DOT10), (MIDDLE, DOT10), (START - 1, DOT10), (DOT10, END + 1)])
def test_grant_rejects_bad_bounds(start, end):
    r = ring(P1, E(START, P1, 256))
    with pytest.raises(LocalProtocolError):
        r.grant_range_to_host(start, end, P2)


def test_grant_rejects_space_not_ours():
    r = ring(P1, E(START, P1, 128), E(MIDDLE, P2, 128))
    with pytest.raises(LocalProtocolError):
        r.grant_range_to_host(DOT10, DOT245, P3)
    assert r.entries == [E(START, P1, 128), E(MIDDLE, P2, 128)]


# -- merge: the rule table in entry.py, row by row ----------------------------------

MERGE_TABLE = [
    # (name, mine, theirs, has_allocations, expected entries, updated)
    ("adopt everything into an empty ring", [], [E(START, P1, 256)], no_allocs, [E(START, P1, 256)], True),
    ("empty incoming ring changes nothing", [E(START, P1, 256)], [], no_allocs, [E(START, P1, 256)], False),
    ("identical rings", [E(START, P2, 128, 2), E(MIDDLE, P1, 128)], [E(START, P2, 128, 2), E(MIDDLE, P1, 128)],
     no_allocs, [E(START, P2, 128, 2), E(MIDDLE, P1, 128)], False),
    ("newer version of someone else's entry wins", [E(START, P2, 256)], [E(START, P3, 256, 1)], no_allocs,
     [E(START, P3, 256, 1)], True),
    ("older version loses", [E(START, P2, 256, 3)], [E(START, P3, 256, 2)], all_allocated,
     [E(START, P2, 256, 3)], False),
    ("equal version, same claim, different free: keep ours", [E(START, P2, 200, 1)], [E(START, P2, 100, 1)],
     no_allocs, [E(START, P2, 200, 1)], False),
    ("equal version, other peers: higher free wins", [E(START, P2, 100, 1)], [E(START, P3, 200, 1)],
     no_allocs, [E(START, P3, 200, 1)], True),
    ("equal version, other peers: ours has more free", [E(START, P3, 200, 1)], [E(START, P2, 100, 1)],
     no_allocs, [E(START, P3, 200, 1)], False),
    ("equal version and free: higher peer name wins everywhere", [E(START, P2, 100, 1)], [E(START, P3, 100, 1)],
     no_allocs, [E(START, P3, 100, 1)], True),
    ("equal version, our entry without allocations can lose", [E(START, P1, 100, 1)], [E(START, P2, 200, 1)],
     no_allocs, [E(START, P2, 200, 1)], True),
    ("newer version naming us: re-impose ours at their version + 1", [E(START, P1, 256, 1)],
     [E(START, P1, 7, 5)], all_allocated, [E(START, P1, 256, 6)], True),
    ("newer version gives our unallocated range away: accepted", [E(START, P1, 256, 1)],
     [E(START, P2, 256, 2)], no_allocs, [E(START, P2, 256, 2)], True),
    ("new token splitting our range, no allocations there: accepted (our free clamped)",
     [E(START, P1, 245), E(DOT245, P3, 11)], [E(START, P1, 128), E(MIDDLE, P2, 117), E(DOT245, P3, 11)],
     no_allocs, [E(START, P1, 128), E(MIDDLE, P2, 117), E(DOT245, P3, 11)], True),
    ("new token of ours inside our range: accepted", [E(START, P1, 256)],
     [E(START, P1, 128), E(MIDDLE, P1, 128)], all_allocated, [E(START, P1, 128), E(MIDDLE, P1, 128)], True),
    ("new token splitting someone else's range: accepted", [E(START, P2, 256)],
     [E(START, P2, 10, 1), E(DOT10, P1, 235), E(DOT245, P2, 11)], all_allocated,
     [E(START, P2, 10, 1), E(DOT10, P1, 235), E(DOT245, P2, 11)], True),
    ("Weave's TestMergeSplit2", [E(START, P2, 250), E(DOT250, P2, 5)],
     [E(START, P2, 10, 1), E(DOT10, P1, 235), E(DOT245, P2, 5), E(DOT250, P2, 5)], no_allocs,
     [E(START, P2, 10, 1), E(DOT10, P1, 235), E(DOT245, P2, 5), E(DOT250, P2, 5)], True),
]


@pytest.mark.parametrize("name,mine,theirs,has_allocs,expected,updated", MERGE_TABLE, ids=[r[0] for r in MERGE_TABLE])
def test_merge_table(name, mine, theirs, has_allocs, expected, updated):
    ours = ring(P1, *mine)
    assert ours.merge(ring(P2, *theirs), has_allocs) is updated
    assert ours.entries == expected
    ours.assert_invariants()


MERGE_ERRORS = [
    # (name, mine, theirs, has_allocations, error code)
    ("newer version takes our allocated range", [E(START, P1, 256)], [E(START, P2, 256, 1)], all_allocated,
     "newer_version"),
    ("equal version, other owner, we have allocations", [E(START, P1, 256)], [E(START, P2, 256)], all_allocated,
     "inconsistent_entry"),
    ("split of our range where we have allocations", [E(START, P1, 245), E(DOT245, P3, 11)],
     [E(START, P1, 128), E(MIDDLE, P2, 117), E(DOT245, P3, 11)], all_allocated, "entry_in_my_range"),
    ("token after our last one, not ours (Weave: always refused)", [E(START, P1, 256)], [E(MIDDLE, P2, 128)],
     no_allocs, "entry_in_my_range"),
    ("split of our range that wraps round the origin", [E(DOT10, P1, 256)], [E(START, P2, 10), E(DOT10, P1, 246)],
     all_allocated, "entry_in_my_range"),
]


@pytest.mark.parametrize("name,mine,theirs,has_allocs,code", MERGE_ERRORS, ids=[r[0] for r in MERGE_ERRORS])
def test_merge_errors_leave_ring_unchanged(name, mine, theirs, has_allocs, code):
    ours = ring(P1, *mine)
    before = ours.to_dict()
    with pytest.raises(RingError) as e:
        ours.merge(ring(P2, *theirs), has_allocs)
    assert e.value.code == code
    assert ours.to_dict() == before


def test_wrapping_split_without_allocations_is_accepted():
    ours = ring(P1, E(DOT10, P1, 256))
    assert ours.merge(ring(P2, E(START, P2, 10), E(DOT10, P1, 246)), no_allocs)
    assert ours.entries == [E(START, P2, 10), E(DOT10, P1, 246)]


def test_has_allocations_gets_the_split_part_only():
    asked = []
    ours = ring(P1, E(START, P1, 128), E(MIDDLE, P3, 128))
    ours.merge(ring(P2, E(START, P1, 10), E(DOT10, P2, 118), E(MIDDLE, P3, 128)),
               lambda rs: asked.append(rs) or False)
    assert asked == [[Range(DOT10, MIDDLE)]]


def test_merge_clamps_our_free_after_a_split():
    ours = ring(P1, E(START, P1, 245), E(DOT245, P3, 11))
    ours.merge(ring(P2, E(START, P1, 100), E(MIDDLE, P2, 117), E(DOT245, P3, 11)), no_allocs)
    assert ours.entries[0] == E(START, P1, 128)  # kept ours (same claim), clamped to its new size


def test_merge_different_seeds():
    ours = ring(P1, E(START, P1, 256), seeds=[P1])
    with pytest.raises(DifferentSeedsError):
        ours.merge(ring(P2, E(START, P2, 256), seeds=[P2]))
    with pytest.raises(DifferentSeedsError):
        ours.merge(ring(P2, E(START, P1, 256), seeds=[P1, P2]))


def test_merge_adopts_seeds_when_we_have_none():
    ours = ring(P3)
    ours.merge(ring(P2, E(START, P1, 128), E(MIDDLE, P2, 128), seeds=[P1, P2]))
    assert ours.seeds == [P1, P2]


def test_merge_different_range():
    with pytest.raises(DifferentRangeError):
        ring(P1).merge(ring(P2, start=START, end=MIDDLE))


def test_merge_invalid_incoming():
    with pytest.raises(InvalidRingError) as e:
        ring(P1).merge(ring(P2, E(MIDDLE, P2), E(START, P2)))
    assert e.value.code == "not_sorted"


def test_merge_is_idempotent_and_weaves_merge_more():
    r1, r2 = ring(P1), ring(P2)
    r1.claim_for_peers([P1])
    r2.merge(r1)
    r1.grant_range_to_host(START, END, P2)
    assert r2.merge(r1)
    r2.grant_range_to_host(MIDDLE, END, P1)
    assert r1.merge(r2)
    assert r1.entries == r2.entries == [E(START, P2, 128, 2), E(MIDDLE, P1, 128)]
    assert not r2.merge(r1) and not r1.merge(r2)


# -- ranges, free reports, transfer, choosing peers ----------------------------------

def test_owned_ranges_split_at_origin():
    r = ring(P1, E(DOT10, P2, 0), E(DOT245, P1, 0))
    assert r.owned_ranges() == [Range(START, DOT10), Range(DOT245, END)]
    assert r.owned_ranges(P2) == [Range(DOT10, DOT245)]
    assert r.all_range_info() == [(P2, Range(DOT10, DOT245), 0), (P1, Range(START, DOT10), 0),
                                  (P1, Range(DOT245, END), 0)]
    assert r.owner(START) == P1 and r.owner(DOT10) == P2 and r.owner(END - 1) == P1


def test_report_free_bumps_version_only_on_change():
    r = ring(P1, E(START, P1, 128), E(MIDDLE, P2, 128))
    assert r.report_free({START: 128}) is False
    assert r.report_free({START: 100}) is True
    assert r.entries[0] == E(START, P1, 100, 1)
    with pytest.raises(LocalProtocolError):
        r.report_free({MIDDLE: 1})  # not ours
    with pytest.raises(LocalProtocolError):
        r.report_free({START: 129})  # more than the range holds


def test_transfer_bumps_version_by_100():
    r = ring(P1, E(START, P2, 10, 3), E(DOT10, P1, 235), E(DOT245, P2, 11, 1))
    moved = r.transfer(P2, P1)
    assert moved == [Range(START, DOT10), Range(DOT245, END)]
    assert r.entries == [E(START, P1, 10, 103), E(DOT10, P1, 235), E(DOT245, P1, 11, 101)]


def test_choose_peers_to_ask_for_space():
    rng = random.Random(1)
    r = ring(P1, E(START, P2, 1), E(MIDDLE, P3, 1))
    assert r.choose_peers_to_ask_for_space(START, MIDDLE, rng) == [P2]
    assert r.choose_peers_to_ask_for_space(MIDDLE, END, rng) == [P3]
    assert sorted(r.choose_peers_to_ask_for_space(START, END, rng)) == [P2, P3]
    r = ring(P1, E(START, P1, 10), E(MIDDLE, P2, 0))
    assert r.choose_peers_to_ask_for_space(START, END, rng) == []


def test_persistence_roundtrip():
    r = ring(P1, E(START, P2, 10, 3), E(DOT10, P1, 235), seeds=[P1, P2])
    assert Ring.from_dict(r.to_dict()) == r
