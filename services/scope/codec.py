"""Scope reports as bytes: msgpack (old spec, Go binary times) or JSON, gzipped or not.

Sans-I/O: bytes in, `Report` out, and back. Decoding is where a peer's bytes enter, so
every failure is a `RemoteProtocolError` (code `bad_report`, `report_too_large` or
`unsupported_media_type`) and nothing else; it is bounded: at most `max_bytes` are ever
inflated (the gzip stream is read incrementally, so a gzip bomb costs `max_bytes` of
memory and the time to inflate them, never its full size).

The msgpack Scope 1.13 speaks (ugorji's codec, old spec):
- strings as fixstr/str16/str32 (never str8), no bin type: PyPI msgpack's
  `use_bin_type=False` writes exactly that, for `str` and for `bytes`;
- floats as float64, integers in their smallest form, maps in struct field order;
- a `time.Time` is Go's `MarshalBinary` written as a 15-byte string: version 1, int64
  seconds since 0001-01-01 UTC, int32 nanoseconds, int16 zone offset in minutes
  (-1 means UTC). We write offset 0, as Scope's probe does (its clock is `time.Local`
  in a UTC zone: every time in the captured reports has offset 0); we read any offset
  (it only names a zone; the instant is the seconds and nanoseconds) and version 2
  (Go 1.16+, one more byte of offset seconds).
A string that is not UTF-8 survives a round trip (surrogateescape), as Go's strings do.
"""
from __future__ import annotations

import gzip as _gzip
import json
import struct
import zlib
from typing import Any

import msgpack

from services.scope.report import (
    GO_ZERO_TIME_NS, NS, Report, check_time_range, report_from_json, report_from_wire,
    report_to_json, report_to_wire)
from shared.errors import LocalProtocolError, RemoteProtocolError

MAX_REPORT_BYTES = 32 << 20
"""Largest report accepted, decompressed (Scope's reports of a busy host are a few MB)."""
MSGPACK = "application/msgpack"
JSON = "application/json"
CONTENT_TYPES = {"msgpack": MSGPACK, "json": JSON}
"""Content-Type of `encode_report(..., fmt=...)`'s bytes."""

_GO_UNIX_OFFSET_S = -GO_ZERO_TIME_NS // NS  # seconds from 0001-01-01 to 1970-01-01
_TIME_V1 = struct.Struct(">Bqih")
_TIME_V2 = struct.Struct(">Bqihb")
_ZONE_OFFSET_MIN = 0


# ---------------------------------------------------------------- Go binary time

def go_time_to_binary(ns: int) -> bytes:
    """Go's `time.Time.MarshalBinary` (version 1, zone offset 0) of a UTC time in ns."""
    sec, nsec = divmod(ns, NS)
    return _TIME_V1.pack(1, sec + _GO_UNIX_OFFSET_S, nsec, _ZONE_OFFSET_MIN)


def go_time_from_binary(raw: bytes | str) -> int:
    """The UTC ns of Go's `MarshalBinary` bytes (given as bytes, or as the str the
    msgpack decoder made of them). RemoteProtocolError when it is not one."""
    if type(raw) is str:
        raw = raw.encode("utf-8", "surrogateescape")
    if type(raw) is not bytes:
        raise RemoteProtocolError(f"a time is not a string: {type(raw).__name__}",
                                  code="bad_time")
    if len(raw) == 15 and raw[0] == 1:
        _v, sec, nsec, _zone = _TIME_V1.unpack(raw)
    elif len(raw) == 16 and raw[0] == 2:
        _v, sec, nsec, _zone, _zone_sec = _TIME_V2.unpack(raw)
    else:
        raise RemoteProtocolError(f"not a Go binary time: {raw.hex()[:40]}", code="bad_time")
    if not 0 <= nsec < NS:
        raise RemoteProtocolError(f"Go binary time with {nsec} ns", code="bad_time")
    return check_time_range((sec - _GO_UNIX_OFFSET_S) * NS + nsec)


# ---------------------------------------------------------------- msgpack

def report_to_msgpack(report: Report) -> bytes:
    """The report in Scope's msgpack (not gzipped)."""
    wire = report_to_wire(report, go_time_to_binary)
    return msgpack.packb(wire, use_bin_type=False, unicode_errors="surrogateescape")


def report_from_msgpack(data: bytes | bytearray) -> Report:
    """A report from Scope's msgpack (not gzipped)."""
    return report_from_wire(unpack_msgpack(data), go_time_from_binary)


def unpack_msgpack(data: bytes | bytearray) -> Any:
    """msgpack bytes as Python values: strings as `str` (non-UTF-8 bytes escaped),
    one complete object and nothing after it."""
    try:
        return msgpack.unpackb(data, raw=False, unicode_errors="surrogateescape",
                               strict_map_key=True)
    except Exception as e:  # a C parser's errors are many types; all are the peer's fault
        raise RemoteProtocolError(f"not a msgpack report: {type(e).__name__}: {e}",
                                  code="bad_report") from None


# ---------------------------------------------------------------- JSON

def report_to_json_bytes(report: Report) -> bytes:
    """The report as Scope's JSON (UTF-8; not gzipped)."""
    wire = report_to_json(report)
    try:
        text = json.dumps(wire, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError as e:  # NaN or infinity in a metric: JSON has no spelling for them
        raise LocalProtocolError(f"report not representable in JSON: {e}") from None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a string that came to us as non-UTF-8 bytes: escape it
        return json.dumps(wire, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def report_from_json_bytes(data: bytes | bytearray) -> Report:
    """A report from Scope's JSON bytes (not gzipped)."""
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError
        raise RemoteProtocolError(f"not a JSON report: {e}", code="bad_report") from None
    return report_from_json(obj)


# ---------------------------------------------------------------- gzip, bounded

_INFLATE_STEP = 1 << 20


def gunzip_bounded(body: bytes, max_bytes: int = MAX_REPORT_BYTES) -> bytearray:
    """Inflate a gzip stream (several members, as Go reads them), refusing past
    `max_bytes` of output without inflating further: memory stays under `max_bytes`
    plus a 1 MiB step. RemoteProtocolError when it is truncated, corrupt or too large.
    A bytearray (not bytes: a copy of up to `max_bytes` spared)."""
    out = bytearray()
    data = body
    while True:
        data = _inflate_member(data, out, max_bytes)
        if not data:
            return out


def _inflate_member(data: bytes, out: bytearray, max_bytes: int) -> bytes:
    """Inflate one gzip member of `data` into `out`; returns the bytes after it."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        while not inflater.eof:
            # >= 1 (0 would mean "no limit" to zlib); in steps, so no chunk is huge
            room = min(max_bytes + 1 - len(out), _INFLATE_STEP)
            chunk = inflater.decompress(data, room)
            out += chunk
            if len(out) > max_bytes:
                raise RemoteProtocolError(
                    f"report larger than {max_bytes} bytes decompressed",
                    code="report_too_large", max_bytes=max_bytes)
            data = inflater.unconsumed_tail
            if not chunk and not data and not inflater.eof:
                raise RemoteProtocolError("truncated gzip stream", code="bad_report")
    except zlib.error as e:
        raise RemoteProtocolError(f"corrupt gzip stream: {e}", code="bad_report") from None
    return inflater.unused_data


# ---------------------------------------------------------------- the POST body

def decode_report(body: bytes, content_type: str | None,
                  content_encoding: str | None = None, *,
                  max_bytes: int = MAX_REPORT_BYTES) -> Report:
    """A report from a `POST /api/report` body and its Content-Type (`application/msgpack`
    or `application/json`, parameters ignored) and Content-Encoding (`gzip`, or none).
    RemoteProtocolError for anything else, and for any body that is not a report."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media not in (MSGPACK, JSON):
        raise RemoteProtocolError(f"unsupported Content-Type {content_type!r}",
                                  code="unsupported_media_type")
    encoding = (content_encoding or "").strip().lower()
    if encoding == "gzip":
        data = gunzip_bounded(body, max_bytes)
    elif encoding in ("", "identity"):
        if len(body) > max_bytes:
            raise RemoteProtocolError(f"report larger than {max_bytes} bytes",
                                      code="report_too_large", max_bytes=max_bytes)
        data = body
    else:
        raise RemoteProtocolError(f"unsupported Content-Encoding {content_encoding!r}",
                                  code="unsupported_media_type")
    return report_from_msgpack(data) if media == MSGPACK else report_from_json_bytes(data)


def encode_report(report: Report, fmt: str = "msgpack", gzip: bool = True,
                  level: int = 6) -> bytes:
    """The body of a `POST /api/report` (Content-Type `CONTENT_TYPES[fmt]`,
    Content-Encoding gzip when `gzip`). The gzip header has no time in it, so equal
    reports give equal bytes."""
    if fmt == "msgpack":
        data = report_to_msgpack(report)
    elif fmt == "json":
        data = report_to_json_bytes(report)
    else:
        raise LocalProtocolError(f"no such report format: {fmt!r}")
    return _gzip.compress(data, compresslevel=level, mtime=0) if gzip else data
