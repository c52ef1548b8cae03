"""Answering DNS queries from the weaveDNS store (weave:nameserver/dns.go), sans I/O.

`QueryHandler.handle(bytes, tcp)` returns the reply bytes, a `Forward` (ask the
upstream servers; the shell does the sending, with a timeout) or None (drop).
Routing, as weave's miekg mux does it (longest zone wins, case-insensitive):
- names in our domain: A -> every live address, shuffled; name exists, other type ->
  NOERROR with no answer; no live entry -> NXDOMAIN. Single-label names are looked up
  in our domain wherever they would otherwise go.
- `in-addr.arpa.`: PTR of a container address -> its first live entry; PTR of any
  other address -> forward; unparseable name or other type -> NXDOMAIN.
- everything else (and DS anywhere) -> forward.
Over UDP an answer is cut to 512 bytes, or the query's EDNS0 size, with TC set; TCP
gets all of it. Garbage gets FORMERR when its header can be read, nothing otherwise;
`handle` never raises on any input.

Replies are assembled here from bytes, not through dnslib, because this runs for every
query: answers name the question by a compression pointer (0xc00c), and the store
keeps a lower-cased name index. dnslib parses only what the fast path refuses.

Answer cache: a reply depends only on the query's bytes after its ID, the transport and
the store, except an A answer of several addresses (shuffled each time) and a Forward.
So every other reply is kept as bytes keyed by (transport, query[2:]) and served again
with only the ID patched, until the store changes (`Nameserver.generation`). At most
CACHE_SIZE replies are kept; a full cache is emptied (a flood of random names cannot
grow it).
"""
from __future__ import annotations

import random
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from dnslib import DNSRecord

from services.dns.nameserver import Nameserver

DEFAULT_TTL_S = 1
CACHE_SIZE = 4096
MIN_UDP_SIZE = 512
MAX_TCP_SIZE = 65535
MAX_NAME = 255

TYPE_A, TYPE_PTR, TYPE_OPT, TYPE_DS = 1, 12, 41, 43
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP = 0, 1, 2, 3, 4
_QR, _AA, _TC, _RD, _RA, _AD, _CD = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080, 0x0020, 0x0010

_HEADER = struct.Struct("!HHHHHH")
_QTAIL = struct.Struct("!HH")
_OPT = struct.Struct("!HHIH")
_REVERSE = (b"in-addr", b"arpa")
_REVERSE_SUFFIX = ".in-addr.arpa."
# Bytes miekg prints unescaped in a name; everything else is `\c` or `\DDD`.
_PLAIN = bytes(b for b in range(0x21, 0x7f) if b not in b'.\'@;()"\\ ')
_SPECIAL = frozenset(b'. \'@;()"\\')


@dataclass(frozen=True, slots=True)
class Query:
    """A parsed standard query: one question, maybe an EDNS0 OPT record."""

    id: int
    flags: int
    question: bytes
    """The question section, uncompressed, starting at offset 12 of any reply."""
    labels: tuple[bytes, ...]
    qtype: int
    edns_size: int | None

    def size_limit(self, tcp: bool) -> int:
        """Largest reply the client accepts: EDNS0 size (at least 512) over UDP."""
        if tcp:
            return MAX_TCP_SIZE
        return max(MIN_UDP_SIZE, self.edns_size or 0)


@dataclass(frozen=True, slots=True)
class Forward:
    """Ask the upstream servers, in order, over the client's transport.

    The shell sends `upstream_request(id)` with a fresh random id to each server in
    turn, passes the first reply to `client_reply`, and if no server gives one within
    the timeout it answers `servfail()`.
    """

    request: bytes
    query: Query
    tcp: bool

    def upstream_request(self, new_id: int) -> bytes:
        return struct.pack("!H", new_id & 0xFFFF) + self.request[2:]

    def client_reply(self, reply: bytes, sent_id: int) -> bytes | None:
        """The upstream reply readdressed to the client (its id, cut to its size
        limit with TC set), or None if `reply` is not a reply to `sent_id`."""
        if len(reply) < 12 or reply[0:2] != struct.pack("!H", sent_id & 0xFFFF):
            return None
        flags = int.from_bytes(reply[2:4], "big")
        if not flags & _QR:
            return None
        if len(reply) <= self.query.size_limit(self.tcp):
            return self.request[0:2] + reply[2:]
        return _HEADER.pack(self.query.id, flags | _TC, 1, 0, 0, 0) + self.query.question

    def servfail(self) -> bytes:
        return _error_reply(self.query, SERVFAIL)


class QueryHandler:
    """Answers queries for `nameserver`'s domain; `rng` shuffles A answers."""

    def __init__(self, nameserver: Nameserver, *, ttl: int = DEFAULT_TTL_S,
                 rng: random.Random | None = None) -> None:
        self.nameserver = nameserver
        self.ttl = ttl
        self.rng = rng or random.Random()
        self.domain = nameserver.domain.lower()
        self._domain_labels = [lbl.encode() for lbl in self.domain.split(".") if lbl]
        self._a_prefix = struct.pack("!HHHIH", 0xC00C, TYPE_A, 1, ttl, 4)
        self._cache: tuple[dict[bytes, bytes], dict[bytes, bytes]] = ({}, {})
        self._cache_generation = -1
        self._shuffled = False
        self.cache_hits = 0

    @property
    def cached(self) -> int:
        """Replies in the answer cache now."""
        return len(self._cache[0]) + len(self._cache[1])

    def handle(self, data: bytes, tcp: bool = False) -> bytes | Forward | None:
        """Reply bytes, a Forward, or None when the message must be dropped."""
        data = bytes(data)
        if self._cache_generation != self.nameserver.generation:
            self._cache[0].clear()
            self._cache[1].clear()
            self._cache_generation = self.nameserver.generation
        cache = self._cache[tcp]
        body = data[2:]
        hit = cache.get(body)
        if hit is not None:
            self.cache_hits += 1
            return data[:2] + hit
        self._shuffled = False
        result = self._handle(data, tcp)
        if result.__class__ is bytes and not self._shuffled and len(data) >= 12:
            if len(cache) >= CACHE_SIZE:
                cache.clear()
            cache[body] = result[2:]
        return result

    def _handle(self, data: bytes, tcp: bool) -> bytes | Forward | None:
        if len(data) < 12:
            return None  # no header: any reply could be used for amplification
        qid, flags, qd, an, ns, ar = _HEADER.unpack_from(data)
        if flags & _QR:
            return None
        opcode = (flags >> 11) & 0xF
        if opcode != 0:
            return _header_reply(qid, flags, NOTIMP, opcode)
        if qd != 1 or an > 1 or ns > 1 or ar > 2:
            return _header_reply(qid, flags, FORMERR)
        query = None
        if an == 0 and ns == 0 and ar <= 1:
            query = _parse_simple(data, qid, flags, ar)
        if query is None:
            query = _parse_any(data, qid, flags)
        if query is None:
            return _header_reply(qid, flags, FORMERR)
        return self._route(query, data, tcp)

    def _route(self, query: Query, data: bytes, tcp: bool) -> bytes | Forward:
        lower = [label.lower() for label in query.labels]
        key = presentation(lower)
        dn = len(self._domain_labels)
        local = dn > 0 and lower[-dn:] == self._domain_labels
        reverse = len(lower) >= 2 and tuple(lower[-2:]) == _REVERSE
        if query.qtype == TYPE_DS:
            local = reverse = False  # miekg hands DS to the parent zone: the root
        if local and (not reverse or dn > 2):
            return self._local(query, key, tcp)
        if reverse:
            return self._reverse(query, key, data, tcp)
        return self._recursive(query, key, data, tcp)

    def _local(self, query: Query, key: str, tcp: bool) -> bytes:
        if key.count(".") == 1:
            key += self.domain
        addrs = self.nameserver.lookup_lower(key)
        if not addrs:
            return _error_reply(query, NXDOMAIN)
        if query.qtype != TYPE_A:
            return _answer(query, [], tcp)  # RFC 4074: the name exists
        prefix = self._a_prefix
        records = [prefix + a.to_bytes(4, "big") for a in addrs]
        if len(records) > 1:
            self.rng.shuffle(records)
            self._shuffled = True
        return _answer(query, records, tcp)

    def _reverse(self, query: Query, key: str, data: bytes, tcp: bool) -> bytes | Forward:
        if query.qtype != TYPE_PTR:
            return _error_reply(query, NXDOMAIN)
        addr = parse_ip(key[: -len(_REVERSE_SUFFIX)] if key.endswith(_REVERSE_SUFFIX) else key)
        if addr is None:
            return _error_reply(query, NXDOMAIN)
        hostname = self.nameserver.reverse_lookup(_byte_swap(addr))
        if hostname is None:
            return Forward(data, query, tcp)
        target = encode_name(hostname)
        if target is None:
            return _error_reply(query, SERVFAIL)  # a name no DNS message can carry
        record = struct.pack("!HHHIH", 0xC00C, TYPE_PTR, 1, self.ttl, len(target)) + target
        return _answer(query, [record], tcp)

    def _recursive(self, query: Query, key: str, data: bytes, tcp: bool) -> bytes | Forward:
        if key.count(".") == 1 and key != ".":
            return self._local(query, key, tcp)
        return Forward(data, query, tcp)


def _parse_simple(data: bytes, qid: int, flags: int, ar: int) -> Query | None:
    """The common query: uncompressed name, maybe one trailing OPT. None otherwise."""
    n, off, labels = len(data), 12, []
    while True:
        if off >= n:
            return None
        length = data[off]
        if length == 0:
            off += 1
            break
        end = off + 1 + length
        if length > 63 or end > n:
            return None
        labels.append(data[off + 1:end])
        off = end
    qend = off + 4
    if off - 12 > MAX_NAME or qend > n:
        return None
    qtype = _QTAIL.unpack_from(data, off)[0]
    edns = None
    if ar == 1:
        if n - qend < 11 or data[qend] != 0:
            return None
        rtype, edns, _, rdlen = _OPT.unpack_from(data, qend + 1)
        if rtype != TYPE_OPT or qend + 11 + rdlen != n:
            return None
    elif qend != n:
        return None
    return Query(qid, flags, data[12:qend], tuple(labels), qtype, edns)


def _parse_any(data: bytes, qid: int, flags: int) -> Query | None:
    """Any other well-formed message, through dnslib; None if it is malformed."""
    try:
        record = DNSRecord.parse(data)
        q = record.questions[0]
        labels = tuple(bytes(label) for label in q.qname.label)
        qtype, qclass = int(q.qtype), int(q.qclass)
        edns = next((int(rr.rclass) for rr in record.ar if rr.rtype == TYPE_OPT), None)
    except Exception:  # dnslib raises many kinds on garbage; all mean "malformed"
        return None
    name = _encode_labels(labels)
    if name is None:
        return None
    return Query(qid, flags, name + _QTAIL.pack(qtype, qclass), labels, qtype, edns)


def _answer(query: Query, records: list[bytes], tcp: bool) -> bytes:
    """An authoritative reply, cut to the client's size limit (TC set) if needed."""
    limit = query.size_limit(tcp)
    size = 12 + len(query.question) + sum(map(len, records))
    flags = _QR | _AA | _RA | (query.flags & (_RD | _CD))
    if size > limit and len(records) > 1:
        room = limit - 12 - len(query.question)
        kept = 0
        for record in records:
            room -= len(record)
            if room < 0:
                break
            kept += 1
        records, flags = records[:kept], flags | _TC
    header = _HEADER.pack(query.id, flags, 1, len(records), 0, 0)
    return header + query.question + b"".join(records)


def _error_reply(query: Query, rcode: int) -> bytes:
    flags = _QR | _RA | (query.flags & (_RD | _CD)) | rcode
    return _HEADER.pack(query.id, flags, 1, 0, 0, 0) + query.question


def _header_reply(qid: int, flags: int, rcode: int, opcode: int = 0) -> bytes:
    """miekg's reply to a message it refuses to unpack: the header alone."""
    kept = flags & (_TC | _RD | _RA | _AD | _CD)
    return _HEADER.pack(qid, _QR | (opcode << 11) | kept | rcode, 0, 0, 0, 0)


def presentation(labels: list[bytes]) -> str:
    """A wire name as miekg prints it ("a.b."), escaping as it does, so that lookups
    match weave's for every name."""
    if not labels:
        return "."
    return "".join(_label_text(label) + "." for label in labels)


def _label_text(label: bytes) -> str:
    if not label.translate(None, _PLAIN):
        return label.decode("ascii")
    return "".join(_escape(b) for b in label)


def _escape(b: int) -> str:
    if b in _SPECIAL:
        return "\\" + chr(b)
    if b < 0x21 or b > 0x7E:
        return f"\\{b:03d}"
    return chr(b)


def encode_name(name: str) -> bytes | None:
    """Wire form of a hostname as stored ("a.b." or "a.b"), or None if it cannot be
    one (empty label, label over 63 bytes, name over 255)."""
    text = name[:-1] if name.endswith(".") else name
    if not text:
        return b"\x00"
    return _encode_labels(tuple(part.encode("utf-8") for part in text.split(".")))


def _encode_labels(labels: tuple[bytes, ...]) -> bytes | None:
    if any(not 0 < len(label) <= 63 for label in labels):
        return None
    wire = b"".join(bytes([len(label)]) + label for label in labels) + b"\x00"
    return wire if len(wire) <= MAX_NAME else None


def parse_ip(text: str) -> int | None:
    """Go `net.ParseIP` then weave's `FromIP4`: IPv4 dotted quad -> its number;
    IPv6 -> the mapped IPv4 address, else 0; anything else -> None."""
    try:
        return int(IPv4Address(text))
    except ValueError:
        pass
    try:
        v6 = IPv6Address(text) if "%" not in text else None  # Go refuses zones
    except ValueError:
        return None
    if v6 is None:
        return None
    return int(v6.ipv4_mapped) if v6.ipv4_mapped is not None else 0


def _byte_swap(addr: int) -> int:
    """in-addr.arpa names list the address backwards (weave `Address.Reverse`)."""
    return int.from_bytes(addr.to_bytes(4, "big"), "little")
