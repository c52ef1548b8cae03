"""MAC cache with an explicit clock (weave:router/mac_cache.go)."""
from __future__ import annotations

from services.datapath.sleeve.mac_cache import EXPIRY_INTERVAL, MAX_AGE, REFRESH_INTERVAL, MacCache

A, B = 0xAA0000000001, 0xAA0000000002
M1 = bytes.fromhex("967220c75315")
M2 = bytes.fromhex("72dcad57524b")


def test_defaults_are_weaves():
    assert (MAX_AGE, REFRESH_INTERVAL, EXPIRY_INTERVAL) == (600.0, 60.0, 60.0)
    assert (MacCache().expiry_interval, MacCache(30.0).expiry_interval) == (EXPIRY_INTERVAL, 3.0)


def test_add_new_then_known():
    cache = MacCache()
    assert cache.lookup(M1) is None
    assert cache.add(M1, A, 0.0) == (True, None)
    assert cache.add(M1, A, 1.0) == (False, None)
    assert cache.lookup(M1) == A and len(cache) == 1


def test_last_seen_refreshed_at_most_once_a_minute():
    cache = MacCache()
    cache.add(M1, A, 0.0)
    cache.add(M1, A, 59.0)
    assert cache.last_seen(M1) == 0.0
    cache.add(M1, A, 60.5)
    assert cache.last_seen(M1) == 60.5
    cache.add(M1, A, 100.0)
    assert cache.last_seen(M1) == 60.5


def test_known_at_another_peer_is_a_conflict_unless_forced():
    cache = MacCache()
    cache.add(M1, B, 0.0)
    assert cache.add(M1, A, 1.0) == (False, B)  # captured locally but known remote: looped
    assert cache.lookup(M1) == B
    assert cache.add_forced(M1, A, 2.0) == (False, B)  # moved from B
    assert cache.lookup(M1) == A
    assert cache.add_forced(M1, A, 3.0) == (False, None)
    assert cache.add_forced(M2, B, 3.0) == (True, None)


def test_expiry_after_ten_minutes_unseen():
    cache = MacCache()
    cache.add(M1, A, 0.0)
    cache.add(M2, B, 0.0)
    cache.add(M2, B, 100.0)  # refreshed
    assert cache.expire(600.0) == []
    assert cache.expire(600.5) == [(M1, A)]
    assert cache.lookup(M1) is None and cache.lookup(M2) == B
    assert cache.expire(700.5) == [(M2, B)]
    assert len(cache) == 0


def test_lookup_ignores_age_until_an_expiry_pass():
    cache = MacCache()
    cache.add(M1, A, 0.0)
    assert cache.lookup(M1) == A  # at any later time, until expire() runs
    cache.expire(10_000.0)
    assert cache.lookup(M1) is None
    assert cache.add(M1, A, 10_001.0) == (True, None)


def test_purge_on_peer_gc():
    cache = MacCache()
    cache.add(M1, A, 0.0)
    cache.add(M2, B, 0.0)
    assert cache.delete_peer(B) is True
    assert cache.delete_peer(B) is False
    assert cache.entries() == {M1: (A, 0.0)}
