"""Per-connection choice of overlay, and what the kernel and gossip are told about it
(sans-I/O; weave:router/overlay_switch.go in spirit).

Each mesh connection may be carried by the fastpath (kernel VXLAN on UDP 6784, our own
overlay name FASTPATH, only between weave-py peers) or by sleeve. The switch keeps, per
connection, whether the fastpath is allowed, whether it works *now*, and what the
sleeve last said of itself; it says which overlay carries the peer's traffic:

- allowed: the mode is not "sleeve", both ends advertise FASTPATH, and the connection
  carries no session key (a password with an untrusted connection needs encryption,
  which the fastpath lacks);
- works: heartbeats (fastpath.py's frames, sent through the VXLAN device itself, so
  they take the very path data takes) arrive from the peer, and the last one said "I
  hear you" (so both directions are proven). Each heartbeat says when the next comes:
  HEARTBEAT_S while the fastpath carries traffic, IDLE_HEARTBEAT_S while it does not
  (the shell tells the switch what the device carried, `traffic(frames, now)`, and
  BUSY_FRAMES or more is traffic: an idle host is not woken
  four times a second per peer). None for LOST_HEARTBEATS + 1 of the peer's intervals
  -> not working. With traffic that is TIMEOUT_S, short enough that a pair falls back
  before a TCP stream's third retransmission (RTO 0.2 s, doubled each time: 0.2, 0.6,
  1.4 s after the loss began); a later fallback leaves the stream waiting for the
  fourth, ~3 s after the loss (the e2e fallback test's two empty seconds). When
  traffic starts, a heartbeat goes at once, announcing the quick pace.
- mode "auto": fastpath while it works, else sleeve (fallback and return happen
  without touching the mesh connection). Mode "fastpath": allowed peers always use it
  (no fallback); peers it cannot reach (Go peers, encrypted connections) keep sleeve,
  as nothing else reaches them. Mode "sleeve": never the fastpath.

Inputs: add/remove(connection), heartbeat(peer, conn_uid, hears_us, now, idle),
tick(now), traffic(frames, now), and the sleeve's own word on a connection,
sleeve(conn_uid, SleeveStatus). Time is a
parameter. Outputs are actions, in order, by this table:

| input                    | when                            | actions                                    |
|--------------------------|---------------------------------|--------------------------------------------|
| add                      | fastpath allowed                | SetFdb(peer's MAC, ip), AllowSource(ip)    |
| add                      | always                          | Switched(overlay now, None), then as below |
| -> FASTPATH              | (add, heartbeat, tick)          | SetFdb(ZERO_MAC, ip): floods go to it;     |
|                          |                                 | Report(FASTPATH, fastpath MTU)             |
| FASTPATH -> SLEEVE       | heartbeats stopped / not heard  | SetFdb(ZERO_MAC, ip, off), FlushLearnt(ip, |
|                          |                                 | peer): the sleeve learns what it flushed;  |
|                          |                                 | the sleeve's last word: Report(sleeve) if  |
|                          |                                 | established, Fail if it failed, else none  |
| sleeve (up / failed)     | the fastpath carries the peer   | none (remembered for a fallback)           |
| sleeve (up / failed)     | otherwise                       | Report(sleeve) / Fail                      |
| remove                   | fastpath allowed                | SetFdb(peer's MAC, ip, off); AllowSource(  |
|                          |                                 | ip, off) unless another allowed path has ip|
| remove                   | it was on the fastpath          | SetFdb(ZERO_MAC, ip, off), FlushLearnt(ip, |
|                          |                                 | peer)                                      |
| prune_previous           | after the first snapshot        | Prune(kept IPs, flood IPs)                 |
Heartbeats: SendHeartbeat every HEARTBEAT_S (IDLE_HEARTBEAT_S without traffic) per
allowed path, and at once when a peer is first heard or traffic starts; the paths'
heartbeats share one beat (`tick`). Once every path works (`settled`), the shell reads
the peers' heartbeats at that beat, with the times the kernel received them, rather than
waking for each: a host at rest wakes once a second for the fastpath, whatever its
number of peers. `fast_peers` is the set of peers the fastpath carries now,
which sleeve leaves out of the broadcasts we start (the VXLAN device floods to them).
"""
from __future__ import annotations

import typing
from dataclasses import dataclass

from shared.config import LaunchConfig
from shared.weave.peer_name import PeerName

FASTPATH = "weave-py-vxlan"
SLEEVE = "sleeve"
HEARTBEAT_S = 0.25
IDLE_HEARTBEAT_S = 1.0
LOST_HEARTBEATS = 3
"""Heartbeats that may be lost in a row without a fallback; see `works` above."""
BUSY_FRAMES = 4
"""Frames besides heartbeats the device must carry between two looks for the fastpath
to count as busy (an ARP now and then is not traffic)."""
TIMEOUT_S = (LOST_HEARTBEATS + 1) * HEARTBEAT_S
"""1.0 s: the fallback with traffic (4.0 s when the peer has none)."""
MODES: tuple[str, ...] = typing.get_args(LaunchConfig.model_fields["datapath"].annotation)
"""The datapath modes (LaunchConfig.datapath): sleeve, fastpath, auto."""
ZERO_MAC = "00:00:00:00:00:00"
"""The all-zeros FDB entry: broadcast, multicast and unknown unicast go to its IP."""


# -- actions ------------------------------------------------------------------------------
@dataclass(frozen=True)
class SendHeartbeat:
    peer: PeerName
    conn_uid: int
    hearing: bool
    """Whether we heard the peer lately (it learns that its direction works)."""
    idle: bool = False
    """The next heartbeat comes after IDLE_HEARTBEAT_S, not HEARTBEAT_S."""


@dataclass(frozen=True)
class Switched:
    """The overlay carrying the connection changed (`previous` None: its first)."""

    peer: PeerName
    conn_uid: int
    overlay: str
    previous: str | None


@dataclass(frozen=True)
class SetFdb:
    """Add (`present`) or remove the VXLAN device's static entry `mac` -> `ip`."""

    mac: str
    ip: str
    present: bool


@dataclass(frozen=True)
class FlushLearnt:
    """Forget what the device and the bridge learnt towards `ip` (frames go by sleeve),
    and hand the MACs the device had learnt there to the sleeve as behind `peer`: the
    sleeve never saw them (the VXLAN port and the sleeve's are isolated), and a frame
    to a MAC it does not know is flooded, where one too big for the sleeve is dropped
    without the frag-needed that makes TCP resend at once in smaller segments."""

    ip: str
    peer: PeerName


@dataclass(frozen=True)
class AllowSource:
    """Let `ip` send to the VXLAN port (`present`), or no longer."""

    ip: str
    present: bool


@dataclass(frozen=True)
class Prune:
    """Remove static FDB entries towards IPs not in `keep` (flood entries: not in
    `flood`) and allowed sources not in `keep`: what a previous process left."""

    keep: frozenset[str]
    flood: frozenset[str]


@dataclass(frozen=True)
class Report:
    """Tell gossip this overlay carries the connection (OverlayEstablished)."""

    peer: PeerName
    conn_uid: int
    overlay: str
    mtu: int
    """0: not known yet."""
    encrypted: bool


@dataclass(frozen=True)
class Fail:
    """Tell gossip no overlay carries the connection (OverlayFailed: it is dropped)."""

    peer: PeerName
    conn_uid: int
    reason: str


Action = SendHeartbeat | Switched | SetFdb | FlushLearnt | AllowSource | Prune | Report | Fail


@dataclass(frozen=True)
class SleeveStatus:
    """What the sleeve last said of a connection."""

    overlay: str
    """How gossip's status names it: sleeve, or fast-sleeve."""
    mtu: int
    encrypted: bool
    established: bool
    """False: up for a resumed connection whose heartbeats are not acknowledged yet."""
    failed: str = ""
    """Why the sleeve failed ("" while it has not)."""


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
    sleeve: SleeveStatus | None = None
    peer_idle: bool = False
    """The peer's last heartbeat said its next comes after IDLE_HEARTBEAT_S."""


def _timeout(path: PeerPath) -> float:
    """How long without a heartbeat from the path's peer before it is not heard: the
    interval its last heartbeat announced, LOST_HEARTBEATS + 1 times."""
    return (LOST_HEARTBEATS + 1) * (IDLE_HEARTBEAT_S if path.peer_idle else HEARTBEAT_S)


def fastpath_allowed(mode: str, overlays: tuple[str, ...], session_key: bytes | None) -> bool:
    return mode != "sleeve" and FASTPATH in overlays and session_key is None


class OverlaySwitch:
    def __init__(self, mode: str = "auto", fast_mtu: int = 0) -> None:
        """`fast_mtu`: the overlay MTU the fastpath offers (reported to gossip)."""
        if mode not in MODES:
            raise ValueError(f"datapath mode {mode!r}: use one of {', '.join(MODES)}")
        self.mode, self.fast_mtu = mode, fast_mtu
        self.paths: dict[int, PeerPath] = {}
        """By connection UID."""
        self.fast_peers: frozenset[PeerName] = frozenset()
        """Peers the fastpath carries now (replaced, never changed in place)."""
        self.busy = True
        """The fastpath carries traffic (heartbeats at HEARTBEAT_S): as the shell last
        said; busy until it says otherwise, so that a new path is proven quickly."""

    # -- inputs --------------------------------------------------------------------------
    def add(self, peer: PeerName, conn_uid: int, address: str, overlays: tuple[str, ...],
            session_key: bytes | None, now: float) -> list[Action]:
        if conn_uid in self.paths:
            return []
        path = PeerPath(peer, conn_uid, address, fastpath_allowed(self.mode, overlays, session_key),
                        next_heartbeat=now)
        self.paths[conn_uid] = path
        out: list[Action] = [SetFdb(str(peer), address, True), AllowSource(address, True)] if path.allowed else []
        return out + self._decide(path, now) + self.tick(now)

    def remove(self, conn_uid: int) -> list[Action]:
        path = self.paths.pop(conn_uid, None)
        if path is None:
            return []
        out: list[Action] = []
        if path.allowed:
            out.append(SetFdb(str(path.peer), path.address, False))
            if not any(p.allowed and p.address == path.address for p in self.paths.values()):
                out.append(AllowSource(path.address, False))  # no other connection to that address needs it
        if path.using == FASTPATH:
            out += [SetFdb(ZERO_MAC, path.address, False), FlushLearnt(path.address, path.peer)]
            self._carried_changed()
        return out

    def heartbeat(self, peer: PeerName, conn_uid: int, hears_us: bool, now: float,
                  idle: bool = False) -> list[Action]:
        """A heartbeat from `peer`; `idle`: it says its next comes after IDLE_HEARTBEAT_S."""
        path = self.paths.get(conn_uid)
        if path is None or path.peer != peer or not path.allowed:
            return []
        first = not self._hearing(path, now)
        path.last_heard, path.peer_hears_us, path.peer_idle = now, hears_us, idle
        out = self._decide(path, now)
        if first:  # answer at once, so the peer learns quickly that we hear it
            out.append(self._heartbeat(path, now, hearing=True))
        return out

    def tick(self, now: float) -> list[Action]:
        """Decisions due, and the heartbeats: when one is due, every path's heartbeat due
        within half an interval goes with it (early never hurts: the peer's timeout counts
        from the last one it heard), so the paths fall into one beat and a host with many
        peers wakes once an interval, not once per peer."""
        out: list[Action] = []
        for path in list(self.paths.values()):
            out += self._decide(path, now)
        allowed = [p for p in self.paths.values() if p.allowed]
        if any(now >= p.next_heartbeat for p in allowed):
            soon = now + (HEARTBEAT_S if self.busy else IDLE_HEARTBEAT_S) / 2
            out += [self._heartbeat(p, now, self._hearing(p, now)) for p in allowed if p.next_heartbeat <= soon]
        return out

    def traffic(self, frames: int, now: float) -> list[Action]:
        """The frames besides heartbeats the fastpath carried since the shell last looked.
        Traffic starting sends a heartbeat on every path at once (the quick pace announced)."""
        busy = frames >= BUSY_FRAMES
        started, self.busy = busy and not self.busy, busy
        if not started:
            return []
        for path in self.paths.values():
            path.next_heartbeat = now
        return self.tick(now)

    def sleeve(self, conn_uid: int, status: SleeveStatus) -> list[Action]:
        """What the sleeve says of the connection now: up (established, or a resumed
        connection's MTU found; or a new MTU or name), or failed."""
        path = self.paths.get(conn_uid)
        if path is None:
            return []
        path.sleeve = status
        return [] if path.using == FASTPATH else self._sleeve_word(path, fresh=True)

    def prune_previous(self) -> list[Action]:
        """What a previous process left in the kernel that the paths now known do not
        need (call once, after the first snapshot of connections)."""
        if self.mode == "sleeve":
            return []
        keep = frozenset(p.address for p in self.paths.values() if p.allowed)
        flood = frozenset(p.address for p in self.paths.values() if p.using == FASTPATH)
        return [Prune(keep, flood)]

    # -- queries -------------------------------------------------------------------------
    def using(self, conn_uid: int) -> str | None:
        path = self.paths.get(conn_uid)
        return path.using if path else None

    def fastpath_peers(self) -> set[PeerName]:
        return {p.peer for p in self.paths.values() if p.using == FASTPATH}

    def works(self, conn_uid: int, now: float) -> bool:
        path = self.paths.get(conn_uid)
        return bool(path and path.allowed and self._hearing(path, now) and path.peer_hears_us)

    def settled(self, now: float) -> bool:
        """Every allowed path works both ways: the shell may read the peers' heartbeats at
        its own beat instead of as each arrives (until then, each is answered at once)."""
        return all(self.works(uid, now) for uid, p in self.paths.items() if p.allowed)

    def next_deadline(self) -> float | None:
        times = [p.next_heartbeat for p in self.paths.values() if p.allowed]
        times += [p.last_heard + _timeout(p) for p in self.paths.values()
                  if p.allowed and p.last_heard is not None and p.using == FASTPATH]
        return min(times) if times else None

    # -- internals -----------------------------------------------------------------------
    def _heartbeat(self, path: PeerPath, now: float, hearing: bool) -> SendHeartbeat:
        path.next_heartbeat = now + (HEARTBEAT_S if self.busy else IDLE_HEARTBEAT_S)
        return SendHeartbeat(path.peer, path.conn_uid, hearing, idle=not self.busy)

    @staticmethod
    def _hearing(path: PeerPath, now: float) -> bool:
        return path.last_heard is not None and now - path.last_heard < _timeout(path)

    def _best(self, path: PeerPath, now: float) -> str:
        if not path.allowed:
            return SLEEVE
        if self.mode == "fastpath":
            return FASTPATH
        return FASTPATH if self._hearing(path, now) and path.peer_hears_us else SLEEVE

    def _decide(self, path: PeerPath, now: float) -> list[Action]:
        best = self._best(path, now)
        if best == path.using:
            return []
        previous, path.using = path.using, best
        out: list[Action] = [Switched(path.peer, path.conn_uid, best, previous)]
        if best == FASTPATH:
            out += [SetFdb(ZERO_MAC, path.address, True),
                    Report(path.peer, path.conn_uid, FASTPATH, self.fast_mtu, False)]
        elif previous == FASTPATH:
            out += [SetFdb(ZERO_MAC, path.address, False), FlushLearnt(path.address, path.peer)]
            out += self._sleeve_word(path)
        if best == FASTPATH or previous == FASTPATH:
            self._carried_changed()
        return out

    @staticmethod
    def _sleeve_word(path: PeerPath, fresh: bool = False) -> list[Action]:
        """What gossip hears from the sleeve: its report, or its failure. After a fallback
        (`fresh` False) a sleeve that is up but not yet established says nothing: it
        reports when it is."""
        s = path.sleeve
        if s is None:
            return []
        if s.failed:
            return [Fail(path.peer, path.conn_uid, s.failed)]
        if s.established or fresh:
            return [Report(path.peer, path.conn_uid, s.overlay, s.mtu, s.encrypted)]
        return []

    def _carried_changed(self) -> None:
        self.fast_peers = frozenset(p.peer for p in self.paths.values() if p.using == FASTPATH)
