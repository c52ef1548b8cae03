"""Messages of Weave Scope's two processes on a host: the probe (`scope-probe`) and the
app (`scope-app`), and what they carry between hosts on the mesh.

Report flow (docs/scope.md):
- the probe publishes every report it makes as a `ProbeReport` on the local bus
  (`weave.events.scope-report`), for the app of its own host;
- and as a broadcast on the mesh channel `SCOPE_CHANNEL` (payload: `encode_mesh`), which
  the gossip service carries to every other host (encrypted and authenticated like all
  mesh traffic, relayed unchanged by Go peers), where it is delivered on
  `weave.mesh.weave-py-scope.in` to that host's app.
`body` is exactly what Scope's `POST /api/report` carries: the report, msgpack (old
spec, Go binary times), gzipped.
"""
from __future__ import annotations

import json
import struct

from pydantic import Field

from shared.errors import RemoteProtocolError
from shared.schemas.base import Message

SCOPE_CHANNEL = "weave-py-scope"
"""Our gossip channel for Scope probe reports (not one of Weave Net's)."""
REPORT_TOPIC = "scope-report"
"""`subjects.event(REPORT_TOPIC)`: reports of this host's probe, for this host's app."""
MESH_FORMAT = 1
MAX_BODY = 8 << 20
"""Largest report body accepted from the mesh or the bus (gzipped bytes)."""


class ProbeReport(Message):
    """One report of a Scope probe."""

    probe_id: str = Field(description="16 hex digits, random per probe start (Scope's X-Scope-Probe-ID).")
    host: str = Field(description="The probe's host name (the weave peer's nickname).")
    probe_version: str = Field(description="Scope's X-Scope-Probe-Version of the probe that made it.")
    full: bool = Field(description="A full report (every 3rd publish) rather than a delta.")
    body: bytes = Field(description="gzip(msgpack(report)), as Scope's POST /api/report body.")


def encode_mesh(report: ProbeReport) -> bytes:
    """The mesh payload: format byte, 2-byte length of a JSON header, header, body."""
    header = json.dumps({"probe_id": report.probe_id, "host": report.host, "probe_version": report.probe_version,
                         "full": report.full}, separators=(",", ":")).encode()
    return bytes([MESH_FORMAT]) + struct.pack("!H", len(header)) + header + report.body


def decode_mesh(payload: bytes) -> ProbeReport:
    """RemoteProtocolError when the payload is not one `encode_mesh` made."""
    try:
        if not payload or payload[0] != MESH_FORMAT:
            raise ValueError(f"format {payload[:1].hex() or 'missing'}")
        (n,) = struct.unpack_from("!H", payload, 1)
        header = json.loads(payload[3:3 + n])
        body = payload[3 + n:]
        if len(body) > MAX_BODY:
            raise ValueError(f"body of {len(body)} bytes exceeds {MAX_BODY}")
        return ProbeReport(body=body, **header)
    except (ValueError, TypeError, struct.error) as exc:
        raise RemoteProtocolError(f"bad scope report on the mesh: {exc}", code="bad_scope_report") from None


class ProbeStatusRequest(Message):
    """Ask the probe what it publishes (weave.scope-probe.status)."""


class ProbeStatusReply(Message):
    probe_id: str = Field(description="This probe's id.")
    host: str = Field(description="Its host name.")
    reports: int = Field(description="Reports published since start.")
    last_bytes: int = Field(description="Size of the last report body, gzipped bytes.")
    bytes_per_s: float = Field(description="Mesh bytes this probe's reports cost per second (mean since start).")
    targets: tuple[str, ...] = Field((), description="Scope apps it also POSTs to (--scope-target).")
