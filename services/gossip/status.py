"""What the router shows people and scripts: /status text and the /report `Router` part,
in Weave Net's formats (mesh:status.go, weave:prog/weaver/http.go templates), built from
the Router core. Pure functions of the core's state."""
from __future__ import annotations

import datetime as _dt
import time

from services.gossip.connection import ConnState
from shared.weave.peer_name import PeerName
from services.gossip.protocol import PROTOCOL_MAX_VERSION, PROTOCOL_MIN_VERSION
from services.gossip.router import Router

VERSION = "weave-py 0.1.0"


def _peer_label(router: Router, name: PeerName) -> str:
    peer = router.peers.fetch(name)
    return f"{name}({peer.nickname})" if peer else str(name)


def connection_rows(router: Router) -> list[dict]:
    """/report `Connections`: our live connections, then the targets not connected."""
    rows = []
    for conn in router.conns.values():
        state = "established" if conn.state is ConnState.ESTABLISHED else "pending"
        if conn.remote is None:
            rows.append({"Address": conn.remote_addr, "Outbound": conn.outbound, "State": "connecting",
                         "Info": ""})
            continue
        # as Weave: the overlay's encryption is named only when it encrypts
        # ("encrypted   sleeve ..." with encrypted=true, else "sleeve ..."; mtu once known)
        encrypted = bool(conn.attrs.get("encrypted", False))
        attrs = {"name": conn.overlay, **{k: v for k, v in conn.attrs.items() if k != "encrypted" or v}}
        info = f"{'encrypted':<11} {conn.overlay} {conn.remote}" if encrypted else f"{conn.overlay} {conn.remote}"
        rows.append({"Address": conn.remote_addr, "Outbound": conn.outbound, "State": state,
                     "Info": info, "Attrs": attrs})
    connected = {c.dial_address for c in router.conns.values() if c.dial_address}
    rows += [r for r in router.maker.connection_statuses(_format_time) if r["Address"] not in connected]
    return rows


def _format_time(t: float) -> str:
    """Router times are on the monotonic clock; show them as wall-clock UTC."""
    wall = time.time() + (t - time.monotonic())
    return _dt.datetime.fromtimestamp(wall, _dt.timezone.utc).strftime("%H:%M:%S")


def report(router: Router) -> dict:
    """The `Router` object of /report (field names as Weave Net's)."""
    cfg = router.config
    return {
        "Protocol": "weave", "ProtocolMinVersion": PROTOCOL_MIN_VERSION, "ProtocolMaxVersion": PROTOCOL_MAX_VERSION,
        "Encryption": cfg.password is not None, "PeerDiscovery": cfg.discovery,
        "Name": str(cfg.name), "NickName": cfg.nickname, "Port": cfg.port,
        "Peers": router.peers.status(),
        **router.routes.status(),
        "Connections": connection_rows(router),
        "TerminationCount": router.maker.termination_count,
        "Targets": router.maker.targets_status(),
        "TrustedSubnets": list(cfg.trusted_subnets),
    }


ROUTER_ORDER = ("OverlayDiagnostics", "TrustedSubnets", "Interface", "CaptureStats", "MACs")
"""Weave's /report Router keys after Targets, in its order (the datapath gives all but
TrustedSubnets)."""


def merge_router(router: dict, extra: dict) -> dict:
    """Router fields from another service (the datapath's) merged in Weave's key order."""
    if not extra:
        return router
    merged = {k: v for k, v in router.items() if k not in ROUTER_ORDER}
    for key in ROUTER_ORDER:
        if key in extra or key in router:
            merged[key] = extra.get(key, router.get(key))
    merged.update({k: v for k, v in extra.items() if k not in merged})
    return merged


def _field(label: str, value: object) -> str:
    return f"{label:>15}: {value}"


def status_text(router: Router) -> str:
    """The router section of `weave status`."""
    rep = report(router)
    states: dict[str, int] = {}
    for row in rep["Connections"]:
        states[row["State"]] = states.get(row["State"], 0) + 1
    total = sum(states.values())
    detail = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
    peer_conns = sum(1 for p in router.peers for c in p.connections.values() if c.established)
    lines = [
        _field("Version", f"{VERSION} (version check update disabled)"), "",
        _field("Service", "router"),
        _field("Protocol", f"weave {PROTOCOL_MIN_VERSION}..{PROTOCOL_MAX_VERSION}"),
        _field("Name", f"{router.config.name}({router.config.nickname})"),
        _field("Encryption", "enabled" if rep["Encryption"] else "disabled"),
        _field("PeerDiscovery", "enabled" if rep["PeerDiscovery"] else "disabled"),
        _field("Targets", len(rep["Targets"])),
        _field("Connections", f"{total} ({detail})" if total else "0"),
        _field("Peers", f"{len(router.peers)} (with {peer_conns} established connections)"),
        _field("TrustedSubnets", ", ".join(rep["TrustedSubnets"]) or "none"),
    ]
    return "\n".join(lines) + "\n"


def peers_text(router: Router) -> str:
    out = []
    for peer in sorted(router.peers, key=lambda p: p.name):
        out.append(f"{peer.name}({peer.nickname})")
        for name, conn in sorted(peer.connections.items()):
            arrow = "->" if conn.outbound else "<-"
            state = "established" if conn.established else "pending"
            out.append(f"   {arrow} {conn.remote_tcp_addr:<21} {_peer_label(router, name):<37} {state}")
    return "\n".join(out) + "\n"


def connections_text(router: Router) -> str:
    out = []
    for row in connection_rows(router):
        arrow = "->" if row["Outbound"] else "<-"
        attrs = "".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}"
                        for k, v in sorted(row.get("Attrs", {}).items()) if k != "name")
        line = f"{arrow} {row['Address']:<21} {row['State']:<11} {row['Info']}"
        out.append(f"{line} {attrs}".rstrip())
    return "\n".join(out) + ("\n" if out else "")


def targets_text(router: Router) -> str:
    return "".join(f"{t}\n" for t in router.maker.targets_status())
