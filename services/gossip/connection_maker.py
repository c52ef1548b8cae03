"""Which addresses to dial, and when (mesh:connection_maker.go).

Targets are addresses ("ip:port") we want a connection to:
- direct peers (`weave launch <peers>`, `weave connect`): kept until forgotten. One given
  without a port means port 6783, and is skipped while we have an inbound connection
  from that IP (that peer already dialled us);
- with discovery on (the default): addresses of peers that others are connected to and
  we are not. For a connection the reporting peer dialled, its RemoteTCPAddr; for one
  it accepted, the remote IP with our port (the remote port is ephemeral).
A target we are connected to is left alone; a target no longer wanted is dropped, or
suspended if it is a direct peer.

Retry backoff per target: the first try is immediate. After a failure the next try is
at a random point in [i/2, 3i/2] from now, where i starts at 2 s and grows x1.5 per
failure up to 6 min. A connection that ended more than 1 min after its try retries at
once (and i resets); name collision or connecting to ourselves: never again.
The connection limit (default 200, 0 = unlimited) is checked when a dial is due; over
it, the dial counts as failed.

Sans-I/O: `refresh(now, ...)` returns the dials to start now; `next_deadline()` says when
to call `refresh` again (mesh runs it on every change and at that deadline). Results of
dials come back through `connection_failed` / `connection_established` /
`connection_ended`; call `refresh` after each, as mesh does.
"""
from __future__ import annotations

import enum
import ipaddress
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable

from services.gossip.peer import ConnectionSummary
from shared.weave.peer_name import PeerName

if TYPE_CHECKING:
    from services.gossip.peers import Peers

PORT = 6783
INITIAL_INTERVAL = 2.0  # seconds
MAX_INTERVAL = 360.0  # seconds (6 min)
RESET_AFTER = 60.0  # seconds a connection must last for an immediate retry
CONN_LIMIT = 200


class TargetState(enum.Enum):
    WAITING = "waiting"
    ATTEMPTING = "attempting"
    CONNECTED = "connected"
    SUSPENDED = "suspended"


class EndReason(enum.Enum):
    """Why a connection ended, as far as retrying cares."""

    OTHER = "other"
    CONNECT_TO_SELF = "connect_to_self"
    NAME_COLLISION = "name_collision"


@dataclass
class Target:
    """`try_after` None means never retry."""

    state: TargetState = TargetState.WAITING
    last_error: str | None = None
    try_after: float | None = None
    try_interval: float = INITIAL_INTERVAL

    def next_try_never(self) -> None:
        self.try_after, self.try_interval = None, MAX_INTERVAL

    def next_try_now(self, now: float) -> None:
        self.try_after, self.try_interval = now, INITIAL_INTERVAL

    def next_try_later(self, now: float, rng: random.Random) -> None:
        self.try_after = now + self.try_interval / 2 + rng.random() * self.try_interval
        self.try_interval = min(self.try_interval * 1.5, MAX_INTERVAL)


@dataclass(frozen=True)
class Dial:
    """Dial `address` now. `accept_new_peer`: the far end may be a peer nobody told us
    about (direct targets); otherwise it must already be in the topology."""

    address: str
    accept_new_peer: bool


@dataclass(frozen=True)
class _DirectPeer:
    ip: str
    port: int  # 0: none given

    def address(self, default_port: int) -> str:
        return f"{self.ip}:{self.port or default_port}"


class ConnectionMaker:
    def __init__(
        self,
        ourself: PeerName,
        rng: random.Random,
        port: int = PORT,
        discovery: bool = True,
        conn_limit: int = CONN_LIMIT,
    ) -> None:
        self.ourself = ourself
        self.port = port
        self.discovery = discovery
        self.conn_limit = conn_limit
        self.termination_count = 0
        self._rng = rng
        self._direct: dict[str, _DirectPeer] = {}
        self._targets: dict[str, Target] = {}
        self._deadline: float | None = None

    # --- direct peers ----------------------------------------------------------------

    def add_direct(
        self,
        peers: Iterable[str],
        now: float,
        replace: bool = False,
        resolve: Callable[[str], str] | None = None,
    ) -> list[str]:
        """`weave connect [--replace]`: add `host[:port]` peers. Returns an error text per
        peer that could not be parsed; the rest are added. `resolve` maps a host name
        to an IPv4 address (the shell does DNS; this core never does I/O)."""
        errors: list[str] = []
        parsed: dict[str, _DirectPeer] = {}
        for peer in peers:
            try:
                parsed[peer] = _parse_peer(peer, resolve)
            except ValueError as e:
                errors.append(str(e))
        if replace:
            self._direct = {}
        for peer, direct in parsed.items():
            self._direct[peer] = direct
            target = self._targets.get(direct.address(self.port))
            if target is not None:
                target.next_try_now(now)  # cut any backoff short
        return errors

    def forget(self, peers: Iterable[str]) -> None:
        """`weave forget`: stop wanting these direct peers (as given to add_direct)."""
        for peer in peers:
            self._direct.pop(peer, None)

    def targets_status(self, active_only: bool = False) -> list[str]:
        """Direct peers as given (/status/targets, /report Targets). `active_only` leaves
        out those we will never retry."""
        out = []
        for peer, direct in self._direct.items():
            target = self._targets.get(direct.address(self.port))
            if active_only and target is not None and target.try_after is None:
                continue
            out.append(peer)
        return out

    def target(self, address: str) -> Target | None:
        return self._targets.get(address)

    # --- the check ---------------------------------------------------------------------

    def refresh(
        self, now: float, topology: "Peers", connections: Iterable[ConnectionSummary]
    ) -> list[Dial]:
        """Work out the targets from direct peers, the topology and our `connections`
        (all of them, established or not), and return the dials due now."""
        conns = list(connections)
        connected_peers = {c.remote_name for c in conns}
        connected_addrs = {c.remote_tcp_addr for c in conns}
        inbound_ips = {_host(c.remote_tcp_addr) for c in conns if not c.outbound}
        valid: set[str] = set()
        direct: set[str] = set()

        def add_target(address: str) -> None:
            if address in connected_addrs:
                return
            valid.add(address)
            if address not in self._targets:
                self._targets[address] = target = Target()
                target.next_try_now(now)

        for peer in self._direct.values():
            address = peer.address(self.port)
            direct.add(address)
            if not (peer.port == 0 and peer.ip in inbound_ips):
                add_target(address)
        if self.discovery:
            self._add_peer_targets(topology, connected_peers, add_target)
        return self._connect_to_targets(now, valid, direct, len(conns))

    def next_deadline(self) -> float | None:
        """When `refresh` must run again for a retry that falls due; None: no timer."""
        return self._deadline

    def _add_peer_targets(
        self, topology: "Peers", connected: set[PeerName], add_target: Callable[[str], None]
    ) -> None:
        for peer in sorted(topology, key=lambda p: p.name):
            if peer.name == self.ourself:
                continue
            for other, conn in sorted(peer.connections.items()):
                if other == self.ourself or other in connected:
                    continue
                if conn.outbound:
                    add_target(conn.remote_tcp_addr)
                elif (ip := _host(conn.remote_tcp_addr)) is not None:
                    add_target(f"{ip}:{self.port}")

    def _connect_to_targets(
        self, now: float, valid: set[str], direct: set[str], n_conns: int
    ) -> list[Dial]:
        dials: list[Dial] = []
        deadline: float | None = None
        for address, target in sorted(self._targets.items()):
            if target.state not in (TargetState.WAITING, TargetState.SUSPENDED):
                continue
            if address not in valid:
                if address in direct:
                    target.state = TargetState.SUSPENDED
                else:
                    del self._targets[address]
                continue
            if target.try_after is None:
                continue
            target.state = TargetState.WAITING
            if target.try_after <= now and self._limit_reached(n_conns):
                target.last_error = f"Connection limit reached ({self.conn_limit})"
                target.next_try_later(now, self._rng)
            if target.try_after <= now:
                target.state = TargetState.ATTEMPTING
                dials.append(Dial(address, address in direct))
            elif deadline is None or target.try_after < deadline:
                deadline = target.try_after
        self._deadline = deadline
        return dials

    def _limit_reached(self, n_conns: int) -> bool:
        return self.conn_limit != 0 and n_conns >= self.conn_limit

    # --- outcomes ----------------------------------------------------------------------

    def connection_failed(self, address: str, now: float, reason: str) -> None:
        """A dial to `address` failed before a connection was added (refused,
        unreachable, handshake error): back off."""
        target = self._targets.get(address)
        if target is None:
            return
        target.state, target.last_error = TargetState.WAITING, reason
        target.next_try_later(now, self._rng)

    def connection_established(self, address: str, outbound: bool) -> None:
        """A connection at `address` was added to our peer (mesh connectionCreated)."""
        target = self._targets.get(address)
        if outbound and target is not None:
            target.state = TargetState.CONNECTED

    def connection_ended(
        self,
        address: str,
        outbound: bool,
        now: float,
        reason: str,
        kind: EndReason = EndReason.OTHER,
    ) -> None:
        """A connection at `address` terminated (after dial, at any stage)."""
        if kind is not EndReason.CONNECT_TO_SELF:
            self.termination_count += 1
        target = self._targets.get(address)
        if not outbound or target is None:
            return
        target.state, target.last_error = TargetState.WAITING, reason
        if kind is not EndReason.OTHER:
            target.next_try_never()
        elif target.try_after is not None and now > target.try_after + RESET_AFTER:
            target.next_try_now(now)
        else:
            target.next_try_later(now, self._rng)

    def connection_statuses(self, format_time: Callable[[float], str] = repr) -> list[dict]:
        """The target rows of /report `Connections` (connections themselves are the
        shell's): State waiting|failed|connecting|retrying, as mesh:status.go."""
        rows = []
        for address, target in self._targets.items():
            state_info = _status_of(target, format_time)
            if state_info is not None:
                rows.append({"Address": address, "Outbound": True,
                             "State": state_info[0], "Info": state_info[1]})
        return rows


def _status_of(target: Target, format_time: Callable[[float], str]) -> tuple[str, str] | None:
    if target.state is TargetState.WAITING:
        until = "never" if target.try_after is None else format_time(target.try_after)
        if target.last_error is None:
            return "waiting", "until: " + until
        return "failed", f"{target.last_error}, retry: {until}"
    if target.state is TargetState.ATTEMPTING:
        if target.last_error is None:
            return "connecting", ""
        return "retrying", target.last_error
    return None


def _host(address: str) -> str | None:
    host, sep, _ = address.rpartition(":")
    return host.strip("[]") if sep else None


def _parse_peer(peer: str, resolve: Callable[[str], str] | None) -> _DirectPeer:
    host, sep, port = peer.rpartition(":")
    if not sep:
        host, port = peer, "0"
    if not host or ":" in host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"invalid peer name {peer!r}, should be host[:port]")
    try:
        ip = str(ipaddress.IPv4Address(host))
    except ValueError:
        if resolve is None:
            raise ValueError(f"cannot resolve {host!r}: no resolver given") from None
        ip = resolve(host)
    return _DirectPeer(ip, int(port))
