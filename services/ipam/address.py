"""IPv4 addresses as uint32, ranges and CIDRs (weave:net/address).

An address is a plain `int` in [0, 2**32). A `Range` is half-open, [start, end), with
`end` allowed to be 2**32 so that a range can reach 255.255.255.255. A `CIDR` is an
address plus a prefix length; its address need not be the network address (a
container's `10.32.0.5/12` is a CIDR too), `is_subnet` says whether it is.

Parsing user input raises `AddressError` (a `ValueError`) naming the offending text.
"""
from __future__ import annotations

import ipaddress
from typing import NamedTuple

ADDRESS_SPACE = 1 << 32
MIN_SUBNET_SIZE = 4  # the first and last addresses are excluded, so 2 would be too small


class AddressError(ValueError):
    """User-supplied text is not a usable IPv4 address, CIDR or subnet."""

    def __init__(self, message: str, text: str) -> None:
        super().__init__(message)
        self.text = text


def parse_ip(text: str) -> int:
    try:
        return int(ipaddress.IPv4Address(text))
    except ValueError:
        raise AddressError(f"invalid IP address: {text!r}", text) from None


def format_ip(addr: int) -> str:
    """Dotted quad (on every snapshot of the owned map: ten times faster than ipaddress)."""
    if not 0 <= addr < ADDRESS_SPACE:
        raise ValueError(f"not an IPv4 address: {addr!r}")
    return f"{addr >> 24}.{(addr >> 16) & 255}.{(addr >> 8) & 255}.{addr & 255}"


class Range(NamedTuple):
    """Addresses [start, end); start <= end."""

    start: int
    end: int

    @classmethod
    def of(cls, start: int, size: int) -> "Range":
        return cls(start, start + size)

    @property
    def size(self) -> int:
        return self.end - self.start

    def contains(self, addr: int) -> bool:
        return self.start <= addr < self.end

    def overlaps(self, other: "Range") -> bool:
        return not (self.start >= other.end or self.end <= other.start)

    def __str__(self) -> str:
        return f"{format_ip(self.start)}-{format_ip(self.end - 1)}"

    def as_cidr_string(self) -> str:
        """`a.b.c.d/n` when the size is a power of two, else the `first-last` form."""
        size = self.size
        if size <= 0 or size & (size - 1):
            return str(self)
        return str(CIDR(self.start, 32 - (size.bit_length() - 1)))

    def biggest_cidr_range(self) -> "Range":
        """A large CIDR-aligned sub-range, chosen exactly as Weave's BiggestCIDRRange.

        Weave's heuristic is not always the very biggest aligned block; peers donate
        the same block as Go would only if we use the same rule.
        """
        size_msb = _msb(self.size)
        masked_size = self.size & (size_msb - 1)
        masked_start = self.start & (size_msb - 1)
        if masked_start == 0:
            return Range.of(self.start, size_msb)
        if size_msb - masked_start <= masked_size:
            return Range.of(self.start + size_msb - masked_start, size_msb)
        half = size_msb // 2
        if half >= masked_start:
            return Range.of(self.start + half - masked_start, half)
        return Range.of(self.start + size_msb - masked_start, half)


def _msb(value: int) -> int:
    """The highest set bit of value (0 for 0)."""
    return 1 << (value.bit_length() - 1) if value else 0


class CIDR(NamedTuple):
    addr: int
    prefix_len: int

    @property
    def size(self) -> int:
        return 1 << (32 - self.prefix_len)

    @property
    def is_subnet(self) -> bool:
        return self.addr & (self.size - 1) == 0

    def range(self) -> Range:
        return Range.of(self.addr, self.size)

    def host_range(self) -> Range:
        """The range without the network and broadcast addresses (RFC 1122)."""
        return Range.of(self.addr + 1, self.size - 2)

    def network(self) -> "CIDR":
        return CIDR(self.addr & ~(self.size - 1) & (ADDRESS_SPACE - 1), self.prefix_len)

    def with_addr(self, addr: int) -> "CIDR":
        """`addr` with this CIDR's prefix length (Weave's MakeCIDR)."""
        return CIDR(addr, self.prefix_len)

    def __str__(self) -> str:
        return f"{format_ip(self.addr)}/{self.prefix_len}"


def parse_cidr(text: str) -> CIDR:
    """`a.b.c.d/n`, host bits allowed (a container address with its subnet's length)."""
    addr_text, sep, len_text = text.partition("/")
    if not sep or not len_text.isdigit() or not 0 <= int(len_text) <= 32:
        raise AddressError(f"invalid CIDR address: {text!r}", text)
    return CIDR(parse_ip(addr_text), int(len_text))


def parse_subnet(text: str) -> CIDR:
    """A subnet to allocate in: network address only, at least MIN_SUBNET_SIZE addresses."""
    cidr = parse_cidr(text)
    if not cidr.is_subnet:
        raise AddressError(f"invalid subnet - bits after network prefix are not all zero: {text}", text)
    if cidr.size < MIN_SUBNET_SIZE:
        raise AddressError(f"invalid subnet - smaller than minimum size {MIN_SUBNET_SIZE}: {text}", text)
    return cidr
