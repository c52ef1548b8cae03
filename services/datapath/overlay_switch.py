"""Per-peer choice of overlay (sans-I/O; weave:router/overlay_switch.go in spirit).

Each mesh connection may be carried by the fastpath (kernel VXLAN on UDP 6784, our own
overlay name FASTPATH, only between weave-py peers) or by sleeve. The switch keeps, per
connection, whether the fastpath is allowed and whether it works *now*, and says which
overlay carries the peer's traffic:

- allowed: the mode is not "sleeve", both ends advertise FASTPATH, and the connection
  carries no session key (a password with an untrusted connection needs encryption,
  which the fastpath lacks);
- works: heartbeats (fastpath.py's frames, sent every HEARTBEAT_S through the VXLAN
  device itself, so they take the very path data takes) arrive from the peer, and the
  last one said "I hear you" (so both directions are proven). None for TIMEOUT_S ->
  not working.
- mode "auto": fastpath while it works, else sleeve (fallback and return happen
  without touching the mesh connection). Mode "fastpath": allowed peers always use it
  (no fallback); peers it cannot reach (Go peers, encrypted connections) keep sleeve,
  as nothing else reaches them. Mode "sleeve": never the fastpath.

Inputs: add/remove(connection), heartbeat(peer, conn_uid, hears_us, now), tick(now).
Outputs: SendHeartbeat and Switched actions. Time is a parameter.
"""
from __future__ import annotations

import typing
from dataclasses import dataclass

from shared.config import LaunchConfig
from shared.weave.peer_name import PeerName

FASTPATH = "weave-py-vxlan"
SLEEVE = "sleeve"
HEARTBEAT_S = 0.5
TIMEOUT_S = 1.5
MODES: tuple[str, ...] = typing.get_args(LaunchConfig.model_fields["datapath"].annotation)
"""The datapath modes (LaunchConfig.datapath): sleeve, fastpath, auto."""


@dataclass(frozen=True)
class SendHeartbeat:
    peer: PeerName
    conn_uid: int
    hearing: bool
    """Whether we heard the peer within TIMEOUT_S (it learns that its direction works)."""


@dataclass(frozen=True)
class Switched:
    peer: PeerName
    conn_uid: int
    overlay: str
    previous: str | None


@dataclass
class PeerPath:
    peer: PeerName
    conn_uid: int
    address: str
    allowed: bool
    last_heard: float | None = None
    peer_hears_us: bool = False
    using: str | None = None
    next_heartbeat: float = 0.0


def fastpath_allowed(mode: str, overlays: tuple[str, ...], session_key: bytes | None) -> bool:
    return mode != "sleeve" and FASTPATH in overlays and session_key is None


class OverlaySwitch:
    def __init__(self, mode: str = "auto") -> None:
        if mode not in MODES:
            raise ValueError(f"datapath mode {mode!r}: use one of {', '.join(MODES)}")
        self.mode = mode
        self.paths: dict[int, PeerPath] = {}
        """By connection UID."""

    # -- inputs --------------------------------------------------------------------------
    def add(self, peer: PeerName, conn_uid: int, address: str, overlays: tuple[str, ...],
            session_key: bytes | None, now: float) -> list:
        if conn_uid in self.paths:
            return []
        path = PeerPath(peer, conn_uid, address, fastpath_allowed(self.mode, overlays, session_key),
                        next_heartbeat=now)
        self.paths[conn_uid] = path
        return self._decide(path, now) + self.tick(now)

    def remove(self, conn_uid: int) -> PeerPath | None:
        return self.paths.pop(conn_uid, None)

    def heartbeat(self, peer: PeerName, conn_uid: int, hears_us: bool, now: float) -> list:
        path = self.paths.get(conn_uid)
        if path is None or path.peer != peer or not path.allowed:
            return []
        first = not self._hearing(path, now)
        path.last_heard, path.peer_hears_us = now, hears_us
        out = self._decide(path, now)
        if first:  # answer at once, so the peer learns quickly that we hear it
            path.next_heartbeat = now + HEARTBEAT_S
            out.append(SendHeartbeat(peer, conn_uid, True))
        return out

    def tick(self, now: float) -> list:
        out: list = []
        for path in list(self.paths.values()):
            out += self._decide(path, now)
            if path.allowed and now >= path.next_heartbeat:
                path.next_heartbeat = now + HEARTBEAT_S
                out.append(SendHeartbeat(path.peer, path.conn_uid, self._hearing(path, now)))
        return out

    # -- queries -------------------------------------------------------------------------
    def using(self, conn_uid: int) -> str | None:
        path = self.paths.get(conn_uid)
        return path.using if path else None

    def fastpath_peers(self) -> set[PeerName]:
        return {p.peer for p in self.paths.values() if p.using == FASTPATH}

    def works(self, conn_uid: int, now: float) -> bool:
        path = self.paths.get(conn_uid)
        return bool(path and path.allowed and self._hearing(path, now) and path.peer_hears_us)

    def next_deadline(self) -> float | None:
        times = [p.next_heartbeat for p in self.paths.values() if p.allowed]
        times += [p.last_heard + TIMEOUT_S for p in self.paths.values()
                  if p.allowed and p.last_heard is not None and p.using == FASTPATH]
        return min(times) if times else None

    # -- internals -----------------------------------------------------------------------
    @staticmethod
    def _hearing(path: PeerPath, now: float) -> bool:
        return path.last_heard is not None and now - path.last_heard < TIMEOUT_S

    def _best(self, path: PeerPath, now: float) -> str:
        if not path.allowed:
            return SLEEVE
        if self.mode == "fastpath":
            return FASTPATH
        return FASTPATH if self._hearing(path, now) and path.peer_hears_us else SLEEVE

    def _decide(self, path: PeerPath, now: float) -> list:
        best = self._best(path, now)
        if best == path.using:
            return []
        previous, path.using = path.using, best
        return [Switched(path.peer, path.conn_uid, best, previous)]
