"""The Router fields of Weave's /report that the datapath knows, in Weave's shapes
(sans-I/O: plain values in, the JSON-ready dict out): OverlayDiagnostics, Interface,
CaptureStats and MACs (the MAC cache: which peer each MAC is behind, and when it was
last seen). The gossip service merges them into its own Router fields."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

from services.datapath import fastpath as fp
from shared.weave.peer_name import PeerName


@dataclass(frozen=True)
class FastpathStatus:
    mtu: int
    peers: Iterable[PeerName]
    """Peers it carries now."""


def router_report(macs: Mapping[bytes, tuple[int, float]], nicknames: Mapping[int, str],
                  capture: tuple[int, int], interface: str, fastpath: FastpathStatus | None,
                  to_wall: float) -> dict:
    """`macs`: MAC -> (peer, last seen), on the clock `to_wall` turns into Unix time by
    adding it; `capture`: (frames received, dropped); `fastpath`: None in mode sleeve
    (no diagnostics of it then)."""
    rows = []
    for mac, (peer, seen) in sorted(macs.items(), key=lambda kv: kv[1][1]):  # oldest first
        rows.append({"Mac": fp.mac_str(mac), "Name": str(PeerName(peer)),
                     "NickName": nicknames.get(peer, ""), "LastSeen": rfc3339(seen + to_wall)})
    diagnostics: dict = {"sleeve": None}
    if fastpath is not None:
        diagnostics["weave-py-vxlan"] = {
            "Device": fp.DEVICE, "MTU": fastpath.mtu,
            "Peers": sorted(str(p) for p in fastpath.peers)}
    received, dropped = capture
    return {"OverlayDiagnostics": diagnostics, "Interface": f"{interface} (via AF_PACKET)",
            "CaptureStats": {"PacketsDropped": dropped, "PacketsIfDropped": 0, "PacketsReceived": received},
            "MACs": rows}


def rfc3339(wall: float) -> str:
    """Go's time.Time JSON form, UTC: 2026-11-29T19:34:54.733968Z."""
    return datetime.fromtimestamp(wall, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
