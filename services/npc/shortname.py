"""ipset names, exactly as weave-npc derives them (weave:npc/shortname.go).

An ipset name is limited to 31 characters, so weave hashes the set's key (a selector
string prefixed with its namespace, say) with SHA-1 and prints the 160-bit digest in
base 85 with its own alphabet, least significant digit first, after "weave-".
A user reading `ipset list` on a host running weave-npc must see the same names here.
"""
from __future__ import annotations

import hashlib

IPSET_NAME_PREFIX = "weave-"

# Printable, single-byte, no comma (list:set member syntax), no space, no XML
# specials, no quote or backslash. Order matters: it is the digit order.
SHORT_NAME_SYMBOLS = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789(){}[]+=_$%^!*|/?.;:@#~"
)
_BASE = len(SHORT_NAME_SYMBOLS)


def short_name(arbitrary: str) -> str:
    """Base-85 SHA-1 of `arbitrary` (UTF-8), least significant digit first.

    Like Go's big.Int loop, a digest of zero would give "", and there is no padding:
    names are usually 25 characters, occasionally fewer.
    """
    value = int.from_bytes(hashlib.sha1(arbitrary.encode("utf-8")).digest(), "big")
    digits = []
    while value > 0:
        value, remainder = divmod(value, _BASE)
        digits.append(SHORT_NAME_SYMBOLS[remainder])
    return "".join(digits)


def ipset_name(key: str) -> str:
    """The ipset weave-npc creates for `key` ("ns:selector", "ingress-default-allow:ns"...)."""
    return IPSET_NAME_PREFIX + short_name(key)
