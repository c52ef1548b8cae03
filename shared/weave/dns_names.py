"""weaveDNS names and addresses as a user gives them (the dns service's HTTP and bus
APIs, and the CLI, check them alike), and miekg/dns's `Fqdn` and `IsSubDomain`.

Weave itself registers any string a caller PUTs. Here a name must be one the DNS can
carry and a resolver can ask for: at most 255 bytes on the wire, labels of 1 to 63
letters, digits, '-' or '_' that neither start nor end with '-'. Gossip from peers is
not checked (a Weave peer may send anything; the query path copes with it).
Every failure is a `BadName`/`BadAddress` whose message is one line for a person.
"""
from __future__ import annotations

import re
from ipaddress import AddressValueError, IPv4Address, IPv6Address

MAX_NAME_BYTES = 255  # wire form, length bytes and the root label included (RFC 1035)
MAX_LABEL_BYTES = 63
_LABEL = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?$")


class BadName(ValueError):
    """A name weaveDNS cannot register; the message says why."""


class BadAddress(ValueError):
    """An address that is not an IPv4 address; the message says why."""


def check_fqdn(name: str) -> str:
    """`name` made fully qualified (trailing dot), or BadName."""
    if not name or name == ".":
        raise BadName("a DNS name is required, e.g. web.weave.local")
    fq = name if name.endswith(".") else name + "."
    labels = fq[:-1].split(".")
    wire = sum(1 + len(label.encode("utf-8")) for label in labels) + 1
    if wire > MAX_NAME_BYTES:
        raise BadName(f"name {_short(name)} is {wire} bytes in DNS form; the limit is {MAX_NAME_BYTES}")
    for label in labels:
        _check_label(label, name)
    return fq


def _check_label(label: str, name: str) -> None:
    if not label:
        raise BadName(f"name {_short(name)} has an empty label (two dots in a row, or a leading dot)")
    if len(label.encode("utf-8")) > MAX_LABEL_BYTES:
        raise BadName(f"label {_short(label)} of {_short(name)} is over {MAX_LABEL_BYTES} bytes")
    if not _LABEL.match(label):
        raise BadName(f"invalid label {label!r} in {_short(name)}: use letters, digits, '-' and '_', "
                      "not starting or ending with '-'")


def parse_ipv4(text: str) -> int:
    """The address as a 32-bit number, or BadAddress (IPv6 is refused by name)."""
    try:
        return int(IPv4Address(text))
    except AddressValueError:
        pass
    try:
        v6 = IPv6Address(text)
    except ValueError:
        raise BadAddress(f"{text!r} is not an IPv4 address") from None
    if v6.ipv4_mapped is not None:  # Go's To4() accepts ::ffff:a.b.c.d
        return int(v6.ipv4_mapped)
    raise BadAddress(f"{text} is an IPv6 address; weaveDNS holds IPv4 addresses only") from None


def looks_like_address(text: str) -> bool:
    """True for what the CLI must treat as an address argument, valid or not: a dotted
    quad of digits (Weave's IP_REGEXP) or anything with a colon that parses as IPv6."""
    if re.fullmatch(r"[0-9]{1,3}(\.[0-9]{1,3}){3}", text):
        return True
    try:
        IPv6Address(text)
        return True
    except ValueError:
        return False


def _short(text: str, limit: int = 40) -> str:
    return repr(text) if len(text) <= limit else repr(text[:limit] + "...")


def fqdn(name: str) -> str:
    """`name` with the trailing dot of a fully qualified name (miekg `dns.Fqdn`)."""
    return name if name.endswith(".") else name + "."


def is_subdomain(parent: str, child: str) -> bool:
    """True if `child` equals `parent` or lies beneath it, ignoring case (miekg
    `dns.IsSubDomain`)."""
    p = [x for x in parent.lower().split(".") if x]
    c = [x for x in child.lower().split(".") if x]
    return len(c) >= len(p) and (not p or c[-len(p):] == p)
