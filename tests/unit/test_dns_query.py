"""DNS query handling: answers, routing, truncation, forwarding, malformed input."""
from __future__ import annotations

import random
import struct
import time

import pytest
from dnslib import EDNS0, QTYPE, RCODE, RR, A, DNSRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from services.dns.nameserver import Nameserver
from services.dns.query import Forward, QueryHandler, encode_name, parse_ip, presentation
from shared.weave.peer_name import PeerName

US, P2 = PeerName(1), PeerName(2)
NOW = 1_795_982_689


def ip(text: str) -> int:
    return struct.unpack("!I", bytes(int(x) for x in text.split(".")))[0]


@pytest.fixture
def handler() -> QueryHandler:
    ns = Nameserver(US, known_peers=[P2])
    ns.add("alpha.weave.local.", "c1", ip("10.32.0.1"), NOW)
    ns.add("Web.weave.local.", "c2", ip("10.32.0.2"), NOW)
    ns.add("web.weave.local.", "c3", ip("10.32.0.3"), NOW)
    ns.add("gone.weave.local.", "c4", ip("10.32.0.4"), NOW)
    ns.delete(NOW, hostname="gone.weave.local.")
    for i in range(100):
        ns.add("many.weave.local.", f"m{i}", ip("10.40.0.0") + i, NOW)
    return QueryHandler(ns, rng=random.Random(7))


def ask(h: QueryHandler, name: str, qtype: str = "A", *, tcp=False, edns=None, rd=True):
    q = DNSRecord.question(name, qtype)
    q.header.id, q.header.rd = 4242, int(rd)
    if edns is not None:
        q.add_ar(EDNS0(udp_len=edns))
    return h.handle(q.pack(), tcp)


def reply(h, *args, **kw) -> DNSRecord:
    out = ask(h, *args, **kw)
    assert isinstance(out, bytes), out
    return DNSRecord.parse(out)


@pytest.mark.parametrize("name, qtype, rcode, aa, answers", [
    ("alpha.weave.local.", "A", "NOERROR", 1, {"10.32.0.1"}),
    ("AlPhA.WeAvE.LoCaL.", "A", "NOERROR", 1, {"10.32.0.1"}),
    ("web.weave.local.", "A", "NOERROR", 1, {"10.32.0.2", "10.32.0.3"}),  # case-insensitive
    ("alpha", "A", "NOERROR", 1, {"10.32.0.1"}),                          # unqualified
    ("WEB", "A", "NOERROR", 1, {"10.32.0.2", "10.32.0.3"}),
    ("alpha.weave.local.", "AAAA", "NOERROR", 1, set()),                  # exists, other type
    ("alpha.weave.local.", "MX", "NOERROR", 1, set()),
    ("alpha", "TXT", "NOERROR", 1, set()),
    ("nope.weave.local.", "A", "NXDOMAIN", 0, set()),
    ("nope.weave.local.", "MX", "NXDOMAIN", 0, set()),
    ("nope", "A", "NXDOMAIN", 0, set()),                                  # not forwarded
    ("gone.weave.local.", "A", "NXDOMAIN", 0, set()),                     # tombstone only
    ("weave.local.", "A", "NXDOMAIN", 0, set()),
    ("1.0.32.10.in-addr.arpa.", "A", "NXDOMAIN", 0, set()),               # reverse zone, not PTR
    ("bogus.in-addr.arpa.", "PTR", "NXDOMAIN", 0, set()),
    ("01.0.32.10.in-addr.arpa.", "PTR", "NXDOMAIN", 0, set()),            # Go refuses leading 0
])
def test_local_answers(handler, name, qtype, rcode, aa, answers):
    r = reply(handler, name, qtype)
    assert RCODE[r.header.rcode] == rcode
    assert (r.header.id, r.header.qr, r.header.aa, r.header.ra, r.header.rd, r.header.tc) == \
        (4242, 1, aa, 1, 1, 0)
    assert [(str(q.qname), QTYPE[q.qtype]) for q in r.questions] == [(name.rstrip(".") + ".", qtype)]
    assert {str(rr.rdata) for rr in r.rr} == answers
    for rr in r.rr:
        assert (str(rr.rname), rr.ttl, QTYPE[rr.rtype]) == (name.rstrip(".") + ".", 1, "A")


@pytest.mark.parametrize("name, target", [
    ("1.0.32.10.in-addr.arpa.", "alpha.weave.local."),
    ("1.0.32.10.IN-ADDR.ARPA.", "alpha.weave.local."),
    ("2.0.32.10.in-addr.arpa.", "Web.weave.local."),  # first live entry in stored order
])
def test_reverse_answers(handler, name, target):
    r = reply(handler, name, "PTR")
    assert (RCODE[r.header.rcode], r.header.aa, len(r.rr)) == ("NOERROR", 1, 1)
    assert (str(r.rr[0].rname), str(r.rr[0].rdata), r.rr[0].ttl) == (name, target, 1)


@pytest.mark.parametrize("name, qtype, tcp", [
    ("example.com.", "A", False),
    ("example.com.", "MX", True),
    ("8.8.8.8.in-addr.arpa.", "PTR", False),   # not a container address
    ("4.0.32.10.in-addr.arpa.", "PTR", False), # only a tombstone has it
    ("alpha.weave.local.", "DS", False),       # DS belongs to the parent zone
    (".", "NS", False),
])
def test_forwarded(handler, name, qtype, tcp):
    q = DNSRecord.question(name, qtype)
    out = handler.handle(q.pack(), tcp)
    assert isinstance(out, Forward)
    assert (out.request, out.tcp, out.query.id) == (q.pack(), tcp, q.header.id)


def test_reply_flags_follow_the_request(handler):
    q = DNSRecord.question("alpha.weave.local.")
    q.header.rd, q.header.cd = 0, 1
    r = DNSRecord.parse(handler.handle(q.pack()))
    assert (r.header.rd, r.header.cd, r.header.ad) == (0, 1, 0)


def test_answers_are_shuffled_with_the_injected_random(handler):
    orders = {tuple(str(rr.rdata) for rr in reply(handler, "web.weave.local.", tcp=True).rr)
              for _ in range(40)}
    assert orders == {("10.32.0.2", "10.32.0.3"), ("10.32.0.3", "10.32.0.2")}
    again = QueryHandler(handler.nameserver, rng=random.Random(7))
    first = [ask(again, "many.weave.local.", tcp=True) for _ in range(3)]
    again = QueryHandler(handler.nameserver, rng=random.Random(7))
    assert [ask(again, "many.weave.local.", tcp=True) for _ in range(3)] == first


QLEN = len(encode_name("many.weave.local.")) + 4  # question section: name, type, class


@pytest.mark.parametrize("tcp, edns, count, tc", [
    (False, None, (512 - 12 - QLEN) // 16, 1),
    (False, 100, (512 - 12 - QLEN) // 16, 1),      # EDNS below 512 still means 512
    (False, 1232, (1232 - 12 - QLEN) // 16, 1),
    (False, 4096, 100, 0),
    (True, None, 100, 0),
    (True, 512, 100, 0),                           # TCP is never truncated
])
def test_truncation(handler, tcp, edns, count, tc):
    raw = ask(handler, "many.weave.local.", tcp=tcp, edns=edns)
    r = DNSRecord.parse(raw)
    assert (len(r.rr), r.header.tc, RCODE[r.header.rcode]) == (count, tc, "NOERROR")
    assert len(raw) == 12 + QLEN + 16 * count
    assert len({str(rr.rdata) for rr in r.rr}) == count


def test_slow_path_answers_like_the_fast_path(handler):
    """Messages the hand parser refuses (an extra record, a compressed name) go through
    dnslib and get the same answer."""
    plain = DNSRecord.question("alpha.weave.local.")
    extra = DNSRecord.question("alpha.weave.local.")
    extra.header.id = plain.header.id
    extra.add_ar(RR("x.example.", QTYPE.A, rdata=A("1.2.3.4")))
    assert handler.handle(extra.pack()) == handler.handle(plain.pack())
    # a question name can only be compressed by pointing forward, which is malformed
    wire = (struct.pack("!HHHHHH", 9, 0x0100, 1, 0, 0, 1) + b"\x05alpha\xc0\x18\x00\x01\x00\x01"
            + b"\x05weave\x05local\x00" + b"\x00\x01\x00\x01\x00\x00\x00\x01\x00\x04\x01\x02\x03\x04")
    assert handler.handle(wire) == struct.pack("!HHHHHH", 9, 0x8101, 0, 0, 0, 0)


def header(qid=7, flags=0x0100, qd=1, an=0, ns=0, ar=0) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, qd, an, ns, ar)


QUESTION = b"\x05alpha\x05weave\x05local\x00\x00\x01\x00\x01"


@pytest.mark.parametrize("wire, expect", [
    (b"", None),
    (header()[:11], None),                                           # no header
    (header(flags=0x8100) + QUESTION, None),                         # a response: ignore
    (header(flags=0x1100) + QUESTION, header(flags=0x8104 | 0x1000, qd=0)),  # STATUS: NOTIMP
    (header(qd=0), header(flags=0x8101, qd=0)),                      # no question: FORMERR
    (header(qd=2) + QUESTION * 2, header(flags=0x8101, qd=0)),
    (header(ar=3) + QUESTION, header(flags=0x8101, qd=0)),
    (header() + QUESTION[:9], header(flags=0x8101, qd=0)),           # truncated name
    (header() + b"\x45abc\x00\x00\x01\x00\x01", header(flags=0x8101, qd=0)),  # bad label type
    (header(flags=0x0110) + b"\x00", header(flags=0x8111, qd=0)),    # RD and CD kept
])
def test_malformed(handler, wire, expect):
    assert handler.handle(wire) == expect


def test_forward_round_trip(handler):
    q = DNSRecord.question("example.com.", "A")
    q.header.id = 1111
    fwd = handler.handle(q.pack())
    up = fwd.upstream_request(2222)
    assert up[:2] == b"\x08\xae" and up[2:] == q.pack()[2:]
    answer = DNSRecord.parse(up).reply()
    answer.add_answer(RR("example.com.", QTYPE.A, rdata=A("93.184.216.34"), ttl=60))
    back = fwd.client_reply(answer.pack(), 2222)
    assert DNSRecord.parse(back).header.id == 1111 and back[2:] == answer.pack()[2:]
    assert fwd.client_reply(answer.pack(), 3333) is None       # not the reply we wait for
    assert fwd.client_reply(up, 2222) is None                   # a query, not a reply
    assert fwd.client_reply(b"\x08\xae", 2222) is None
    s = DNSRecord.parse(fwd.servfail())
    assert (s.header.id, RCODE[s.header.rcode], s.header.ra, str(s.q.qname)) == \
        (1111, "SERVFAIL", 1, "example.com.")


@pytest.mark.parametrize("tcp, cut", [(False, True), (True, False)])
def test_oversized_upstream_reply_is_cut_for_udp(handler, tcp, cut):
    q = DNSRecord.question("big.example.", "A")
    fwd = handler.handle(q.pack(), tcp)
    answer = DNSRecord.parse(fwd.upstream_request(5)).reply()
    for i in range(60):
        answer.add_answer(RR(f"n{i}.big.example.", QTYPE.A, rdata=A("10.0.0.1")))
    raw = answer.pack()
    assert len(raw) > 512
    r = DNSRecord.parse(fwd.client_reply(raw, 5))
    assert (r.header.tc, len(r.rr), r.header.id) == ((1, 0, q.header.id) if cut else (0, 60, q.header.id))


def test_helpers():
    assert presentation([b"a", b"b.c", b"d e", b"\x01\xff"]) == "a.b\\.c.d\\ e.\\001\\255."
    assert presentation([]) == "."
    assert encode_name("ab.c.") == b"\x02ab\x01c\x00" and encode_name("a..b") is None
    assert encode_name("x" * 64 + ".") is None
    assert [parse_ip(x) for x in ("1.2.3.4", "::ffff:1.2.3.4", "::1", "1.2.3", "fe80::1%2")] == \
        [0x01020304, 0x01020304, 0, None, None]


def test_ptr_to_unencodable_hostname_is_servfail():
    ns = Nameserver(US)
    ns.add("x" * 70 + ".weave.local.", "c", ip("10.1.2.3"), NOW)
    h = QueryHandler(ns)
    r = DNSRecord.parse(h.handle(DNSRecord.question("3.2.1.10.in-addr.arpa.", "PTR").pack()))
    assert RCODE[r.header.rcode] == "SERVFAIL"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_random_bytes_never_raise(data):
    h = QueryHandler(Nameserver(US), rng=random.Random(1))
    for wire in (data, header() + data, header(ar=1) + data):
        out = h.handle(wire)
        assert out is None or isinstance(out, (bytes, Forward))
        if isinstance(out, bytes):  # a reply to this message's id
            assert out[:2] == wire[:2] and out[2] & 0x80 and len(out) >= 12


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=10), min_size=0, max_size=4),
       st.integers(0, 65535), st.sampled_from([None, 0, 512, 4096]), st.booleans())
def test_any_well_formed_query_gets_a_parseable_answer(labels, qtype, edns, tcp):
    ns = Nameserver(US)
    ns.add("alpha.weave.local.", "c1", ip("10.32.0.1"), NOW)
    h = QueryHandler(ns)
    wire = header(ar=int(edns is not None)) + b"".join(bytes([len(x)]) + x for x in labels) \
        + b"\x00" + struct.pack("!HH", qtype, 1)
    if edns is not None:
        wire += b"\x00" + struct.pack("!HHIH", 41, edns, 0, 0)
    out = h.handle(wire, tcp)
    assert isinstance(out, (bytes, Forward))
    if isinstance(out, bytes):  # checked by hand: dnslib refuses non-ASCII labels
        question = wire[12:12 + sum(len(x) + 1 for x in labels) + 5]
        assert out[:2] == b"\x00\x07" and out[2] & 0x80 and out[4:6] == b"\x00\x01"
        assert out[12:12 + len(question)] == question


def test_fast_enough(handler):
    """Every query goes through here; Go's weaveDNS does ~85k/s. Keep a wide margin for
    slow CI machines while still catching an accidental per-query sort or re-parse."""
    queries = [DNSRecord.question(n).pack() for n in ("alpha.weave.local.", "web", "nope.weave.local.")]
    start = time.perf_counter()
    for _ in range(3000):
        for q in queries:
            handler.handle(q)
    per_query = (time.perf_counter() - start) / 9000
    assert per_query < 100e-6


# --- the answer cache -------------------------------------------------------------------

def _raw(name: str, qid: int, qtype: str = "A") -> bytes:
    q = DNSRecord.question(name, qtype)
    q.header.id = qid
    return q.pack()


def test_a_cached_answer_differs_only_in_its_id(handler):
    first = handler.handle(_raw("alpha.weave.local", 1))
    again = handler.handle(_raw("alpha.weave.local", 2))
    assert handler.cache_hits == 1
    assert again[:2] == b"\x00\x02" and again[2:] == first[2:]
    assert [str(rr.rdata) for rr in DNSRecord.parse(again).rr] == ["10.32.0.1"]


def test_a_store_change_is_seen_by_the_next_query(handler):
    assert DNSRecord.parse(handler.handle(_raw("late.weave.local", 1))).header.rcode == RCODE.NXDOMAIN
    handler.nameserver.add("late.weave.local.", "c9", ip("10.32.0.9"), NOW)
    reply = DNSRecord.parse(handler.handle(_raw("late.weave.local", 2)))
    assert reply.header.rcode == RCODE.NOERROR and [str(rr.rdata) for rr in reply.rr] == ["10.32.0.9"]
    handler.nameserver.delete(NOW + 1, hostname="alpha.weave.local.")
    handler.handle(_raw("alpha.weave.local", 3))
    assert DNSRecord.parse(handler.handle(_raw("alpha.weave.local", 4))).header.rcode == RCODE.NXDOMAIN


def test_answers_of_several_addresses_are_shuffled_every_time_not_cached(handler):
    orders = {tuple(str(rr.rdata) for rr in DNSRecord.parse(handler.handle(_raw("web.weave.local", i))).rr)
              for i in range(20)}
    assert len(orders) == 2 and handler.cache_hits == 0


def test_udp_and_tcp_answers_are_cached_apart_and_the_cache_is_bounded(handler, monkeypatch):
    udp = handler.handle(_raw("many.weave.local", 1, "MX"), tcp=False)
    tcp = handler.handle(_raw("many.weave.local", 1, "MX"), tcp=True)
    assert handler.cache_hits == 0 and udp == tcp  # an empty answer: same bytes, two entries
    monkeypatch.setattr("services.dns.query.CACHE_SIZE", 8)
    for i in range(50):
        handler.handle(_raw(f"n{i}.weave.local", i))
    assert handler.cached <= 8
