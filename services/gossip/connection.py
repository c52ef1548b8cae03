"""One mesh TCP connection, as the router sees it (mesh:connection.go), sans-I/O.

States: HANDSHAKING (bytes exchanged, features not yet in) -> PENDING (added to our
peer, the overlay not yet up) -> ESTABLISHED (the overlay confirmed it) -> CLOSED.
Timers, all absolute times on the caller's clock:
- `read_deadline`: the header must arrive within 10 s of connecting; after that any
  message within 60 s (2 x heartbeat), re-armed on every received byte;
- `heartbeat_at`: once the handshake is done, an empty heartbeat every
  `protocol.heartbeat` (GossipSettings.heartbeat_s, 30 s).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

from services.gossip.peer import Peer
from services.gossip.protocol import Event, HandshakeComplete, MeshProtocol, ProtocolTag


class ConnState(enum.Enum):
    HANDSHAKING = "handshaking"
    PENDING = "pending"
    ESTABLISHED = "established"
    CLOSED = "closed"


@dataclass
class Connection:
    key: int
    outbound: bool
    remote_addr: str
    """"ip:port" of the far end (for inbound connections the port is ephemeral)."""
    dial_address: str | None
    """The connection maker's target address, for outbound connections."""
    accept_new_peer: bool
    protocol: MeshProtocol
    started: float
    read_deadline: float
    heartbeat_at: float | None = None
    state: ConnState = ConnState.HANDSHAKING
    remote: Peer | None = None
    hello: HandshakeComplete | None = None
    added: bool = False
    """True once it is in our peer's connection table (and holds a topology ref)."""
    error: str = ""
    overlay: str = "none"
    attrs: dict = field(default_factory=dict)
    local_addr: str = ""
    pending_trace: str | None = None
    """traceparent sent just before the next gossip message (router.TRACE_TAG)."""
    overlay_conn: object | None = None
    """The OverlayConn announced to the overlay, once added (router.OverlayConn)."""

    @property
    def conn_uid(self) -> int:
        return self.hello.conn_uid if self.hello else 0

    def receive(self, data: bytes, now: float) -> list[Event]:
        """Feed bytes; RemoteProtocolError on a protocol violation (close this one)."""
        events = self.protocol.receive_data(data)
        if events or data:
            self.read_deadline = now + self.protocol.read_timeout
        for ev in events:
            if isinstance(ev, HandshakeComplete):
                self.hello = ev
                self.heartbeat_at = now + self.protocol.heartbeat
                self.read_deadline = now + self.protocol.read_timeout
        return events

    def heartbeat_due(self, now: float) -> bytes:
        """The heartbeat message if one is due now (b"" otherwise)."""
        if self.heartbeat_at is None or now < self.heartbeat_at or self.state is ConnState.CLOSED:
            return b""
        self.heartbeat_at = now + self.protocol.heartbeat
        return self.protocol.send_message(ProtocolTag.HEARTBEAT, b"")

    def next_deadline(self) -> float:
        return min(self.read_deadline, self.heartbeat_at or self.read_deadline)

    def __str__(self) -> str:
        arrow = "->" if self.outbound else "<-"
        who = f" {self.remote}" if self.remote else ""
        return f"{arrow}[{self.remote_addr}{who}]"
