"""Scope report bodies as bytes: the real 1.13 POST bodies and JSON, Go binary times,
old-spec msgpack, bounded gzip, and garbage (only ever RemoteProtocolError)."""
from __future__ import annotations

import gzip
import json
import struct
import time
import tracemalloc
import zlib
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from services.scope.codec import (
    CONTENT_TYPES, MAX_REPORT_BYTES, decode_report, encode_report, go_time_from_binary,
    go_time_to_binary, gunzip_bounded, report_from_msgpack, report_to_msgpack)
from services.scope.report import (
    GO_ZERO_TIME_NS, Metric, Node, Report, parse_rfc3339, report_from_json, report_to_json)
from shared.errors import LocalProtocolError, RemoteProtocolError
from tests.unit.test_scope_report import reports

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "scope-1.13"
POSTS = [FIXTURES / "probe-post" / f"report-00{n}" for n in (1, 2, 3, 4)]
STDOUT = sorted((FIXTURES / "probe-stdout-json").glob("report-stdout-00?.json"))
S = 1_000_000_000


def post_body(stem: Path) -> bytes:
    return stem.with_suffix(".msgpack.gz").read_bytes()


def decode_post(stem: Path) -> Report:
    return decode_report(post_body(stem), "application/msgpack", "gzip")


# ---------------------------------------------------------------- the real samples

@pytest.mark.parametrize("stem", POSTS, ids=lambda p: p.name)
def test_probe_posts_decode_to_their_json(stem: Path) -> None:
    headers = dict(json.loads(stem.with_suffix(".headers.json").read_text())["headers"])
    report = decode_report(post_body(stem), headers.get("Content-Type"),
                           headers.get("Content-Encoding"))
    assert report_to_json(report) == json.loads(stem.with_suffix(".json").read_text())


@pytest.mark.parametrize("stem", POSTS, ids=lambda p: p.name)
def test_probe_posts_re_encode_byte_identical(stem: Path) -> None:
    """Map order is kept as decoded (Go's random node/metric order included) and latest
    maps are written sorted as Scope's are, so the msgpack is the probe's, byte for byte.
    (The gzip around it is not: Go's deflate makes other, equally valid, bytes.)"""
    raw = gzip.decompress(post_body(stem))
    assert report_to_msgpack(decode_post(stem)) == raw


@pytest.mark.parametrize("stem", POSTS, ids=lambda p: p.name)
def test_what_we_encode_decodes_back_equal(stem: Path) -> None:
    report = decode_post(stem)
    for fmt in ("msgpack", "json"):
        for zipped in (True, False):
            body = encode_report(report, fmt=fmt, gzip=zipped)
            back = decode_report(body, CONTENT_TYPES[fmt], "gzip" if zipped else None)
            assert back == report, (fmt, zipped)
    assert encode_report(report) == encode_report(report)  # no time in the gzip header


@pytest.mark.parametrize("path", STDOUT, ids=lambda p: p.name)
def test_probe_stdout_json_decodes_plain_and_gzipped(path: Path) -> None:
    text = path.read_bytes()
    plain = decode_report(text, "application/json; charset=utf-8", None)
    zipped = decode_report(gzip.compress(text), "application/json", "gzip")
    assert plain == zipped == report_from_json(json.loads(text))
    assert report_to_json(plain) == json.loads(text)
    assert json.loads(encode_report(plain, fmt="json", gzip=False)) == json.loads(text)


def test_header_contract_of_the_sample() -> None:
    headers = dict(json.loads(POSTS[0].with_suffix(".headers.json").read_text())["headers"])
    assert headers["Content-Type"] == CONTENT_TYPES["msgpack"]
    assert headers["Content-Encoding"] == "gzip"


# ---------------------------------------------------------------- Go binary times

@pytest.mark.parametrize("raw, rfc3339", [
    (bytes.fromhex("010000000ee2a39c963548d4a40000"), "2026-12-03T17:23:34.893965476Z"),
    (bytes.fromhex("010000000e7791f7000000000000ff"[:28] + "00"), "1970-01-01T00:00:00Z"),
])
def test_go_binary_time_golden(raw: bytes, rfc3339: str) -> None:
    """The first: sample 001's TS, as Scope's probe wrote it (zone offset 0)."""
    ns = parse_rfc3339(rfc3339)
    assert go_time_to_binary(ns) == raw
    assert go_time_from_binary(raw) == ns
    assert go_time_from_binary(raw.decode("utf-8", "surrogateescape")) == ns


def test_go_binary_time_layout() -> None:
    raw = go_time_to_binary(1796318614893965476)
    version, sec, nsec, zone = struct.unpack(">Bqih", raw)
    assert (len(raw), version, zone) == (15, 1, 0)
    assert sec == 1796318614 + 62135596800 and nsec == 893965476


@pytest.mark.parametrize("raw, ns", [
    (bytes(9) + b"\x00\x00\x00\x00\xff\xff", None),                         # bad version 0
    (b"\x01" + bytes(12) + b"\xff\xff", GO_ZERO_TIME_NS),                   # time.Time{} (UTC)
    (b"\x01" + struct.pack(">qih", 62135596800, 5, 60), 5),                 # +01:00 zone
    (b"\x02" + struct.pack(">qihb", 62135596800, 5, -1, 0), 5),            # Go 1.16+ v2
    (b"\x01" + struct.pack(">qih", 62135596800, 5, 0)[:-1], None),          # 14 bytes
    (b"\x01" + struct.pack(">qih", 62135596800, 2 * S, 0), None),           # ns >= 1e9
    (b"\x01" + struct.pack(">qih", 2**62, 0, 0), None),                     # year > 9999
])
def test_go_binary_time_decoding(raw: bytes, ns: int | None) -> None:
    if ns is None:
        with pytest.raises(RemoteProtocolError):
            go_time_from_binary(raw)
    else:
        assert go_time_from_binary(raw) == ns


def test_zone_offset_of_every_sample_time_is_zero() -> None:
    """Why we write offset 0: every time.Time in the captured bodies carries it."""
    seen = 0

    def walk(value):
        nonlocal seen
        if isinstance(value, dict):
            for k, v in value.items():
                if k in (b"timestamp", b"date", b"TS"):
                    assert len(v) == 15 and v[0] == 1 and v[-2:] == b"\x00\x00"
                    seen += 1
                else:
                    walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
    for stem in POSTS:
        walk(msgpack.unpackb(gzip.decompress(post_body(stem)), raw=True))
    assert seen > 500


# ---------------------------------------------------------------- old-spec msgpack

def msgpack_types(data: bytes) -> set[str]:
    """The msgpack type of every value in `data` (walked by hand, not by the library)."""
    types: set[str] = set()
    pos = 0

    def skip(n: int) -> None:
        nonlocal pos
        pos += n

    def one() -> None:
        nonlocal pos
        b = data[pos]
        pos += 1
        if b <= 0x7F or b >= 0xE0:
            types.add("fixint")
        elif 0x80 <= b <= 0x8F:
            types.add("fixmap")
            for _ in range(2 * (b & 0x0F)):
                one()
        elif 0x90 <= b <= 0x9F:
            types.add("fixarray")
            for _ in range(b & 0x0F):
                one()
        elif 0xA0 <= b <= 0xBF:
            types.add("fixstr")
            skip(b & 0x1F)
        elif b in (0xDA, 0xDB):
            n = 2 if b == 0xDA else 4
            types.add(f"str{8 * n}")
            length = int.from_bytes(data[pos:pos + n], "big")
            skip(n + length)
        elif b in (0xDC, 0xDD, 0xDE, 0xDF):
            n = 2 if b in (0xDC, 0xDE) else 4
            count = int.from_bytes(data[pos:pos + n], "big")
            skip(n)
            types.add("map" if b >= 0xDE else "array")
            for _ in range(count * (2 if b >= 0xDE else 1)):
                one()
        elif b in (0xC0, 0xC2, 0xC3):
            types.add("nil" if b == 0xC0 else "bool")
        else:
            sizes = {0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8, 0xD0: 1, 0xD1: 2,
                     0xD2: 4, 0xD3: 8, 0xD9: 1, 0xC4: 1, 0xC5: 2, 0xC6: 4}
            names = {0xCA: "float32", 0xCB: "float64", 0xD9: "str8", 0xC4: "bin8",
                     0xC5: "bin16", 0xC6: "bin32"}
            types.add(names.get(b, "int"))
            if b in (0xD9, 0xC4, 0xC5, 0xC6):
                length = int.from_bytes(data[pos:pos + sizes[b]], "big")
                skip(sizes[b] + length)
            else:
                skip(sizes[b])
    one()
    assert pos == len(data)
    return types


def test_strings_and_floats_follow_the_old_spec() -> None:
    report = Report.make(ts=1 * S, report_id="7")
    node = Node("h;1", "process").with_latests(2 * S, {
        "short": "x" * 31, "str8-sized": "y" * 200, "str16": "z" * 300, "str32": "w" * 70000,
        "not-utf8": b"\xff\xfe".decode("utf-8", "surrogateescape")})
    report.process.add_node(node.with_metric("cpu", Metric([(3 * S, 1)], max=100)))
    data = report_to_msgpack(report)
    types = msgpack_types(data)
    assert {"fixstr", "str16", "str32", "float64"} <= types
    assert not types & {"str8", "bin8", "bin16", "bin32", "float32"}
    assert b"\xcb" + struct.pack(">d", 1.0) in data          # 1.0 as float64
    assert b"\xda\x00\xc8" + b"y" * 200 in data               # 200 bytes: str16, not str8
    assert b"\xaf" + go_time_to_binary(2 * S) in data         # a time: a 15-byte fixstr
    assert report_from_msgpack(data) == report                 # non-UTF-8 survives


@pytest.mark.parametrize("stem", POSTS, ids=lambda p: p.name)
def test_sample_bodies_use_only_old_spec_types(stem: Path) -> None:
    types = msgpack_types(gzip.decompress(post_body(stem)))
    assert not types & {"str8", "bin8", "bin16", "bin32", "float32"}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reports())
def test_any_report_round_trips_both_encodings(report: Report) -> None:
    for fmt in ("msgpack", "json"):
        body = encode_report(report, fmt=fmt)
        assert decode_report(body, CONTENT_TYPES[fmt], "gzip") == report
    assert not msgpack_types(report_to_msgpack(report)) & {"str8", "bin8", "float32"}


def test_nan_cannot_be_json_but_can_be_msgpack() -> None:
    report = Report()
    report.host.add_node(Node("h;<host>", "host").with_metric(
        "load1", Metric.single(1, float("nan"))))
    with pytest.raises(LocalProtocolError):
        encode_report(report, fmt="json")
    back = decode_report(encode_report(report), CONTENT_TYPES["msgpack"], "gzip")
    assert back.host.nodes["h;<host>"].metrics["load1"].samples[0][1] != 0.0
    with pytest.raises(LocalProtocolError):
        encode_report(report, fmt="xml")


# ---------------------------------------------------------------- bounded gzip

def test_multi_member_gzip_is_read_whole() -> None:
    raw = gzip.decompress(post_body(POSTS[0]))
    body = gzip.compress(raw[:1000]) + gzip.compress(raw[1000:])
    assert decode_report(body, "application/msgpack", "gzip") == decode_post(POSTS[0])


def test_gzip_bomb_is_refused_fast_and_small() -> None:
    """100 MB of zeros in ~100 kB of gzip: refused after inflating the limit, not all."""
    co = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    bomb = b"".join(co.compress(zeros) for _ in range(100)) + co.flush()
    assert len(bomb) < 200_000
    tracemalloc.start()
    started = time.monotonic()
    with pytest.raises(RemoteProtocolError) as caught:
        decode_report(bomb, "application/msgpack", "gzip")
    elapsed = time.monotonic() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert caught.value.code == "report_too_large"
    assert elapsed < 2.0
    assert peak < MAX_REPORT_BYTES + (8 << 20)
    with pytest.raises(RemoteProtocolError):
        gunzip_bounded(gzip.compress(bytes(1001)), max_bytes=1000)
    assert gunzip_bounded(gzip.compress(bytes(1000)), max_bytes=1000) == bytes(1000)


def test_plain_body_over_the_limit_is_refused() -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        decode_report(b"\x80" * 101, "application/msgpack", None, max_bytes=100)
    assert caught.value.code == "report_too_large"


# ---------------------------------------------------------------- garbage

def _sample_wire() -> dict:
    return msgpack.unpackb(gzip.decompress(post_body(POSTS[0])), raw=False,
                           unicode_errors="surrogateescape")


def _repack(wire: dict) -> bytes:
    return gzip.compress(msgpack.packb(wire, use_bin_type=False,
                                       unicode_errors="surrogateescape"))


def _bad_bodies() -> dict[str, bytes]:
    body = post_body(POSTS[0])
    raw = gzip.decompress(body)
    bodies = {
        "truncated gzip": body[:len(body) // 2],
        "gzip without its trailer": body[:-8],
        "corrupt deflate": body[:20] + bytes(50) + body[70:],
        "not gzip": raw,
        "gzip then garbage": body + b"garbage!",
        "truncated msgpack": gzip.compress(raw[:-100]),
        "msgpack then more": gzip.compress(raw + b"\xc0"),
        "empty": b"",
        "a msgpack list": gzip.compress(msgpack.packb([1, 2, 3])),
        "bin type time": None,
        "a 14-byte time": None,
        "Window as a string": None,
        "latest value as an int": None,
        "nodes as a list": None,
        "metric value as a string": None,
        "integer map key": gzip.compress(b"\x81\x01\x02"),
        "deep nesting": gzip.compress(b"\x91" * 100_000 + b"\xc0"),
    }
    edits = {
        "bin type time": lambda w: w.__setitem__("TS", None) or msgpack.packb(
            {**w, "TS": b"\x01" * 15}, use_bin_type=True, unicode_errors="surrogateescape"),
        "a 14-byte time": lambda w: w.__setitem__("TS", "x" * 14),
        "Window as a string": lambda w: w.__setitem__("Window", "3s"),
        "latest value as an int": lambda w: w["Host"]["nodes"]["sca1-host;<host>"]["latest"][
            "os"].__setitem__("value", 7),
        "nodes as a list": lambda w: w["Process"].__setitem__("nodes", [1]),
        "metric value as a string": lambda w: w["Host"]["nodes"]["sca1-host;<host>"][
            "metrics"]["load1"]["samples"][0].__setitem__("value", "2.7"),
    }
    for name, edit in edits.items():
        wire = _sample_wire()
        packed = edit(wire)
        bodies[name] = gzip.compress(packed) if isinstance(packed, bytes) else _repack(wire)
    return bodies


BAD_BODIES = _bad_bodies()


@pytest.mark.parametrize("name", sorted(BAD_BODIES))
def test_bad_bodies_are_remote_protocol_errors(name: str) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_report(BAD_BODIES[name], "application/msgpack", "gzip")


def test_bin_type_time_is_accepted_when_well_formed() -> None:
    """A newer-spec encoder's bin-typed time is still a Go time: read it."""
    wire = _sample_wire()
    wire["TS"] = go_time_to_binary(5 * S)
    body = gzip.compress(msgpack.packb(wire, use_bin_type=True,
                                       unicode_errors="surrogateescape"))
    assert decode_report(body, "application/msgpack", "gzip").ts == 5 * S


@pytest.mark.parametrize("content_type, encoding", [
    ("text/plain", "gzip"), (None, "gzip"), ("application/x-msgpack", "gzip"),
    ("application/msgpack", "br"), ("application/json", "deflate"),
])
def test_unsupported_headers(content_type, encoding) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        decode_report(post_body(POSTS[0]), content_type, encoding)
    assert caught.value.code == "unsupported_media_type"


@pytest.mark.parametrize("body", [b"{", b"[]", b'"x"', b"\xff\xfe", b"{" * 100_000,
                                  b'{"TS": "yesterday"}', b'{"Process": {"nodes": 3}}'])
def test_bad_json_bodies(body: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_report(body, "application/json", None)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(["application/msgpack", "application/json"]),
       st.sampled_from(["gzip", None]))
def test_random_bytes_only_ever_raise_remote_protocol_error(body, ctype, encoding) -> None:
    try:
        decode_report(body, ctype, encoding)
    except RemoteProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 18319), st.integers(0, 255), st.integers(1, 4))
def test_corrupted_sample_only_ever_raises_remote_protocol_error(at, byte, count) -> None:
    raw = bytearray(gzip.decompress(post_body(POSTS[0])))
    raw[at:at + count] = bytes([byte]) * count
    try:
        decode_report(bytes(raw), "application/msgpack", None)
    except RemoteProtocolError:
        pass
