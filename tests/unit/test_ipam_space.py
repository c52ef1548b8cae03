"""Space: allocate lowest free, claim, free, donate (Weave's rule), update_ranges."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.ipam.address import Range
from services.ipam.space import Space
from shared.errors import LocalProtocolError


def space(*ranges, allocated=()):
    s = Space()
    s.add_ranges([Range(a, b) for a, b in ranges])
    for addr in allocated:
        s.claim(addr)
    return s


@pytest.mark.parametrize("ranges,allocated,want,expected", [
    ([(10, 20)], [], (0, 100), 10),
    ([(10, 20)], [10, 11], (0, 100), 12),
    ([(10, 20)], [], (15, 100), 15),
    ([(10, 20), (30, 40)], [], (20, 35), 30),
    ([(10, 20)], [], (20, 30), None),
    ([(10, 20)], list(range(10, 20)), (0, 100), None),
    ([(10, 20)], [], (12, 12), None),
])
def test_allocate_lowest_free_in_range(ranges, allocated, want, expected):
    s = space(*ranges, allocated=allocated)
    assert s.allocate(Range(*want)) == expected
    if expected is not None:
        assert not s.is_free(expected)
        assert s.num_owned() == len(allocated) + 1


def test_claim_and_free():
    s = space((10, 20))
    s.claim(15)
    assert s.ours == [15, 16] and s.free == [10, 15, 16, 20]
    with pytest.raises(LocalProtocolError, match="not free to claim"):
        s.claim(15)
    with pytest.raises(LocalProtocolError, match="not free to claim"):
        s.claim(25)
    s.release(15)
    assert s.ours == [] and s.free == [10, 20]
    with pytest.raises(LocalProtocolError, match="not ours"):
        s.release(15)


@pytest.mark.parametrize("ranges,allocated,req,donated,free_after", [
    # everything free: half of the biggest aligned block, its upper half
    ([(0, 256)], [], (0, 256), (128, 256), 128),
    # biggest aligned block not more than half the free space: all of it (last of equals)
    ([(0, 64), (128, 192)], [], (0, 256), (128, 192), 64),
    # [1, 256) free: aligned block [128, 256) is more than half, so its upper half
    ([(0, 256)], [0], (0, 256), (192, 256), 191),
    # a single address (a claim): given if free
    ([(0, 256)], [], (7, 8), (7, 8), 255),
    # only part of the request is ours
    ([(0, 16)], [], (8, 100), (12, 16), 12),
    # the captured donation: h1 owned 10.32.0.0/13 with 10.32.0.1 in use
    ([(0x0A200000, 0x0A280000)], [0x0A200001], (0x0A200000, 0x0A300000), (0x0A260000, 0x0A280000), 393215),
])
def test_donate(ranges, allocated, req, donated, free_after):
    s = space(*ranges, allocated=allocated)
    assert s.donate(Range(*req)) == Range(*donated)
    assert s.num_free() == free_after
    assert all(not s.is_free(a) for a in range(*donated)) if donated[1] - donated[0] < 1000 else True


@pytest.mark.parametrize("ranges,allocated,req", [
    ([(0, 16)], [], (16, 32)),
    ([(0, 16)], [7], (7, 8)),
    ([], [], (0, 100)),
])
def test_donate_nothing(ranges, allocated, req):
    s = space(*ranges, allocated=allocated)
    before = (list(s.ours), list(s.free))
    assert s.donate(Range(*req)) is None
    assert (s.ours, s.free) == before


def test_update_ranges_adds_new_free_space_and_drops_space_given_away():
    s = space((0, 64), allocated=[3])
    s.update_ranges([Range(0, 32), Range(100, 110)])
    assert s.owned_ranges() == [Range(0, 32), Range(100, 110)]
    assert s.ours == [3, 4] and s.free == [0, 3, 4, 32, 100, 110]


def test_update_ranges_refuses_to_drop_allocations():
    s = space((0, 64), allocated=[40])
    with pytest.raises(LocalProtocolError):
        s.update_ranges([Range(0, 32)])


def test_has_allocations_and_counts():
    s = space((0, 64), allocated=[10, 11, 40])
    assert s.has_allocations([Range(0, 11)]) and not s.has_allocations([Range(12, 40), Range(41, 64)])
    assert s.num_owned() == 3 and s.num_free() == 61
    assert s.num_free_in_range(Range(8, 16)) == 6


@settings(max_examples=60)
@given(st.lists(st.tuples(st.sampled_from("acfd"), st.integers(0, 127)), max_size=60))
def test_space_operations_keep_ours_and_free_disjoint(ops):
    s = space((0, 128))
    model_ours: set[int] = set()
    owned = set(range(128))
    for op, n in ops:
        if op == "a":
            got = s.allocate(Range(n, 128))
            expected = min((a for a in owned - model_ours if a >= n), default=None)
            assert got == expected
            if got is not None:
                model_ours.add(got)
        elif op == "c" and n in owned - model_ours:
            s.claim(n)
            model_ours.add(n)
        elif op == "f" and n in model_ours:
            s.release(n)
            model_ours.discard(n)
        elif op == "d":
            chunk = s.donate(Range(n, 128))
            if chunk is not None:
                given_away = set(range(chunk.start, chunk.end))
                assert not given_away & model_ours
                owned -= given_away
        s.assert_invariants()
        assert s.num_owned() == len(model_ours)
        assert s.num_free() == len(owned - model_ours)
