"""Peer names, UIDs and short IDs, in mesh's "mac" flavour (mesh:peer_name_mac.go).

A peer name is a 48-bit number written like a MAC address (`aa:00:00:00:00:01`). On
the wire it travels as a gob uint (gossip envelopes) or as 6 big-endian bytes
(topology `NameByte`, sleeve frame headers). A `::` in user input stands for zero
bytes, as in mesh (`::1` is `00:00:00:00:00:01`).
"""
from __future__ import annotations

import re

from shared.errors import LocalProtocolError

_GROUP = re.compile(r"[0-9a-fA-F]{1,2}")
_CANONICAL = re.compile(r"[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5}")
NAME_BITS = 48
NAME_MASK = (1 << NAME_BITS) - 1
SHORT_ID_BITS = 12


class PeerName(int):
    """A 48-bit peer name. `str()` gives the MAC form; `bytes()` the 6 wire bytes."""

    def __new__(cls, value: int) -> "PeerName":
        if not 0 <= int(value) <= NAME_MASK:
            raise LocalProtocolError(f"peer name {value!r} does not fit in 48 bits")
        return super().__new__(cls, value)

    @classmethod
    def parse(cls, text: str) -> "PeerName":
        """Parse `aa:bb:cc:dd:ee:ff`, with `::` standing for a run of zero bytes.

        Raises ValueError with the offending text for anything else.
        """
        groups = _split_groups(text)
        value = 0
        for g in groups:
            value = (value << 8) | int(g, 16)
        return cls(value)

    @classmethod
    def of(cls, value: "PeerName | int | str") -> "PeerName":
        """`value` as a PeerName: itself, a number, or text as `parse` takes it (the
        canonical `aa:bb:cc:dd:ee:ff` form without the regex). ValueError for text or
        a number that is no peer name."""
        if isinstance(value, PeerName):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            if not 0 <= value <= NAME_MASK:
                raise ValueError(f"peer name {value!r} does not fit in 48 bits")
            return cls(value)
        if not isinstance(value, str):
            raise ValueError(f"a peer name is text or a number, not {type(value).__name__}")
        if _CANONICAL.fullmatch(value):
            return cls(int(value.replace(":", ""), 16))
        return cls.parse(value)

    @classmethod
    def from_bytes6(cls, data: bytes) -> "PeerName":
        if len(data) != 6:
            raise ValueError(f"peer name needs 6 bytes, got {len(data)}")
        return cls(int.from_bytes(data, "big"))

    def to_bytes6(self) -> bytes:
        return int(self).to_bytes(6, "big")

    def __str__(self) -> str:
        b = self.to_bytes6()
        return ":".join(f"{x:02x}" for x in b)

    def __format__(self, spec: str) -> str:
        """The MAC form, padded or aligned as `spec` says; the number only when `spec`
        asks for one (`:x`, `:d`, ...)."""
        if spec and spec[-1] in "bcdoxXn":
            return int.__format__(self, spec)
        return format(str(self), spec)

    def __repr__(self) -> str:
        return f"PeerName({str(self)!r})"


def _split_groups(text: str) -> list[str]:
    if text.count("::") > 1:
        raise ValueError(f"invalid peer name format: {text!r}")
    if "::" in text:
        left, right = text.split("::")
        lg = left.split(":") if left else []
        rg = right.split(":") if right else []
        if len(lg) + len(rg) > 5:
            raise ValueError(f"invalid peer name format: {text!r}")
        groups = lg + ["0"] * (6 - len(lg) - len(rg)) + rg
    else:
        groups = text.split(":")
    if len(groups) != 6 or not all(_GROUP.fullmatch(g) for g in groups):
        raise ValueError(f"invalid peer name format: {text!r}")
    return groups


class PeerUID(int):
    """Random non-zero uint64 chosen at every process start (mesh:peer.go)."""


class ShortID(int):
    """12-bit short id, used by fastdp's VXLAN VNI (mesh:peer.go)."""

    def __new__(cls, value: int) -> "ShortID":
        if not 0 <= int(value) < (1 << SHORT_ID_BITS):
            raise LocalProtocolError(f"short id {value!r} does not fit in 12 bits")
        return super().__new__(cls, value)


UNKNOWN_PEER_NAME = PeerName(0)
