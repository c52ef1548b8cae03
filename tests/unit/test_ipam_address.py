import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.ipam.address import (CIDR, AddressError, Range, format_ip, parse_cidr, parse_ip,
                                   parse_subnet)


def test_ip_roundtrip():
    assert parse_ip("10.32.0.1") == 0x0A200001
    assert format_ip(0x0A200001) == "10.32.0.1"
    assert format_ip(0xFFFFFFFF) == "255.255.255.255"


@pytest.mark.parametrize("bad", ["", "10.32.0", "10.32.0.256", "::1", "ten.0.0.1"])
def test_parse_ip_rejects(bad):
    with pytest.raises(AddressError) as e:
        parse_ip(bad)
    assert e.value.text == bad


@pytest.mark.parametrize("text,addr,plen,is_subnet", [
    ("10.32.0.0/12", 0x0A200000, 12, True),
    ("10.32.0.5/12", 0x0A200005, 12, False),
    ("0.0.0.0/0", 0, 0, True),
    ("10.1.2.3/32", 0x0A010203, 32, True),
])
def test_parse_cidr(text, addr, plen, is_subnet):
    c = parse_cidr(text)
    assert c == CIDR(addr, plen)
    assert c.is_subnet is is_subnet
    assert str(c) == text


@pytest.mark.parametrize("bad", ["10.32.0.0", "10.32.0.0/", "10.32.0.0/33", "10.32.0.0/-1", "x/8", "10.32.0.0/1a"])
def test_parse_cidr_rejects(bad):
    with pytest.raises(AddressError):
        parse_cidr(bad)


@pytest.mark.parametrize("bad,why", [
    ("10.32.0.1/12", "not all zero"),
    ("10.32.0.0/31", "smaller than minimum size 4"),
    ("10.32.0.0/32", "smaller than minimum size 4"),
])
def test_parse_subnet_rejects(bad, why):
    with pytest.raises(AddressError, match=why):
        parse_subnet(bad)


def test_cidr_ranges():
    c = parse_subnet("10.32.0.0/30")
    assert c.size == 4
    assert c.range() == Range(0x0A200000, 0x0A200004)
    assert c.host_range() == Range(0x0A200001, 0x0A200003)
    assert c.with_addr(0x0A200002) == CIDR(0x0A200002, 30)
    assert parse_cidr("10.32.1.7/12").network() == CIDR(0x0A200000, 12)


def test_range_basics():
    r = Range(10, 20)
    assert r.size == 10 and r.contains(10) and not r.contains(20)
    assert r.overlaps(Range(19, 30)) and not r.overlaps(Range(20, 30)) and not r.overlaps(Range(0, 10))
    assert str(Range(parse_ip("10.0.0.0"), parse_ip("10.0.1.0"))) == "10.0.0.0-10.0.0.255"


@pytest.mark.parametrize("r,text", [
    (Range(0x0A200000, 0x0A300000), "10.32.0.0/12"),
    (Range(0x0A200000, 0x0A200001), "10.32.0.0/32"),
    (Range(0x0A200000, 0x0A200003), "10.32.0.0-10.32.0.2"),
])
def test_as_cidr_string(r, text):
    assert r.as_cidr_string() == text


# Values worked through Weave's BiggestCIDRRange by hand.
@pytest.mark.parametrize("r,expected", [
    (Range(0, 256), Range(0, 256)),
    (Range(1, 4), Range(2, 4)),
    (Range(3, 8), Range(4, 8)),
    (Range(1, 7), Range(2, 4)),
    (Range(3, 7), Range(4, 6)),
    (Range(7, 13), Range(8, 12)),
    (Range(5, 6), Range(5, 6)),
    # the captured donation: h1's free [10.32.0.2, 10.40.0.0) -> 10.36.0.0/14
    (Range(0x0A200002, 0x0A280000), Range(0x0A240000, 0x0A280000)),
])
def test_biggest_cidr_range_table(r, expected):
    assert r.biggest_cidr_range() == expected


@settings(max_examples=300)
@given(st.integers(0, (1 << 32) - 2), st.integers(1, 1 << 20))
def test_biggest_cidr_range_is_aligned_and_inside(start, size):
    end = min(start + size, 1 << 32)
    got = Range(start, end).biggest_cidr_range()
    assert start <= got.start < got.end <= end
    assert got.size & (got.size - 1) == 0
    assert got.start % got.size == 0
