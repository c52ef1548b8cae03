"""Messages between the gossip service and the rest of the host: topology and gossip
channels (`weave.events.topology`, `weave.gossip.*`, `weave.mesh.<channel>.*`).

Every peer name is a `PeerNameField`: a PeerName to the code on either side, the MAC
form on the wire."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from shared.schemas.base import Message, PeerNameField
from shared.schemas.scope import SCOPE_CHANNEL  # ours: Scope probe reports, broadcast to every host's app

IPAM_CHANNEL = "IPallocation"  # Weave Net's IPAM gossip channel
DNS_CHANNEL = "nameserver"  # Weave Net's weaveDNS gossip channel
POLICY_CHANNEL = "weave-py-policy"  # ours: network policies applied with `weave policy`
BUS_CHANNELS = (IPAM_CHANNEL, DNS_CHANNEL, POLICY_CHANNEL, SCOPE_CHANNEL)
"""Channels the gossip service bridges to local owners; any other is relayed only."""


class PeerInfo(Message):
    """One peer of the mesh as the local router knows it."""

    name: PeerNameField = Field(description="Peer name.")
    nickname: str = Field(description="Peer nickname (its hostname by default).")
    uid: int = Field(description="Peer UID (changes at every restart of that peer's router).")
    short_id: int = Field(description="12-bit short id (fastdp VXLAN VNI).")
    reachable: bool = Field(description="A route to it exists over established connections.")
    address: str = Field("", description="Underlay IP of our direct connection to it, if any.")


class TopologyEvent(Message):
    """The mesh changed. Published on weave.events.topology; also the reply to PeersRequest."""

    ourself: PeerNameField = Field(description="Our own peer name.")
    peers: tuple[PeerInfo, ...] = Field(description="Every known peer, ourselves included.")
    removed: tuple[PeerNameField, ...] = Field((), description="Peers forgotten since the last event (garbage collected).")
    unicast: dict[PeerNameField, PeerNameField] = Field(
        default_factory=dict, description="Data-plane next hop per destination (established, symmetric links).")
    broadcast: dict[PeerNameField, tuple[PeerNameField, ...]] = Field(
        default_factory=dict, description="Data-plane broadcast next hops per source peer.")


class PeersRequest(Message):
    """Ask the gossip service for the current topology (weave.gossip.peers)."""


class ConnectRequest(Message):
    """Add direct peers (weave connect); `replace` drops the others first."""

    peers: tuple[str, ...] = Field(description="host[:port] of each peer.")
    replace: bool = Field(False, description="Forget every other direct peer first.")


class ForgetRequest(Message):
    """Forget direct peers (weave forget)."""

    peers: tuple[str, ...] = Field(description="host[:port] of each peer to forget.")


class MeshSend(Message):
    """A channel owner's gossip for the mesh (published on weave.mesh.<channel>.out).

    kind: `broadcast` to every peer; `unicast` to peer `dst`; `gossip` to random
    neighbours, or only down the connection to neighbour `dst` when it is set (a new
    peer's catch-up, as mesh's sendAllGossipDown).
    """

    kind: Literal["broadcast", "unicast", "gossip"] = Field(description="How to send it.")
    payload: bytes = Field(description="The channel's own encoding (gob for Weave's channels).")
    dst: PeerNameField | None = Field(None, description="Peer name: unicast target, or the neighbour for gossip.")


class MeshReceive(Message):
    """Gossip the mesh delivered for a channel (published on weave.mesh.<channel>.in).

    The gossip service has already relayed it as mesh does for a channel it does not
    interpret; the owner only merges it. `src` is the originator for broadcast and
    unicast; for gossip mesh does not say who relayed it, so it is 00:00:00:00:00:00.
    """

    kind: Literal["broadcast", "unicast", "gossip"] = Field(description="How it arrived.")
    src: PeerNameField = Field(description="Peer name of the sender (see above).")
    payload: bytes = Field(description="The channel's own encoding.")


# -- the overlay: gossip <-> datapath ---------------------------------------------------
# Weave's overlays (sleeve, fastdp) live in the router process and hang off each mesh
# connection. Here they live in the datapath process: the gossip service announces each
# connection (with the session key when the overlay must encrypt), carries the overlay's
# control messages over the TCP connection, and marks the connection established when
# the datapath says its heartbeats work, as Weave does.

class OverlayConnection(Message):
    """A mesh connection the datapath should run an overlay forwarder on."""

    peer: PeerNameField = Field(description="Remote peer name.")
    nickname: str = Field(description="Remote peer nickname.")
    conn_uid: int = Field(description="Connection UID (ConnID xor ConnID): heartbeats carry it.")
    outbound: bool = Field(description="We dialled (sets the nonce polarity bit).")
    remote_addr: str = Field(description="ip:port of the TCP connection's far end.")
    local_addr: str = Field(description="ip:port of our end of the TCP connection.")
    session_key: bytes | None = Field(None, description="32-byte NaCl key if the overlay must encrypt, else None.")
    overlays: tuple[str, ...] = Field(description="Overlays both ends support, in our order of preference.")
    compat: bool = Field(description="The peer sent no Overlays feature: sleeve with raw tags 1-3.")
    remote_short_id: int | None = Field(None, description="Peer's 12-bit short id, None if it has none.")


class OverlayConnectionEvent(Message):
    """weave.events.overlay_connection: a connection was added or removed."""

    kind: Literal["added", "removed"] = Field(description="What happened to it.")
    connection: OverlayConnection = Field(description="The connection.")


class OverlayMessageEvent(Message):
    """weave.events.overlay_message: an overlay control message (tags 1-3, 7) from a peer."""

    peer: PeerNameField = Field(description="Sending peer.")
    conn_uid: int = Field(description="Connection it came on.")
    tag: int = Field(description="Mesh protocol tag (1, 2, 3, or 7).")
    payload: bytes = Field(description="Message body after the tag byte.")


class OverlaySend(Message):
    """weave.gossip.overlay_send: write an overlay control message to a peer."""

    peer: PeerNameField = Field(description="Destination peer.")
    conn_uid: int = Field(description="Only on this connection (dropped if it is gone).")
    tag: int = Field(description="Mesh protocol tag (1, 2, 3, or 7).")
    payload: bytes = Field(description="Body after the tag byte.")


class OverlayEstablished(Message):
    """weave.gossip.overlay_established: the overlay's heartbeats work on this connection."""

    peer: PeerNameField = Field(description="Remote peer.")
    conn_uid: int = Field(description="Connection.")
    overlay: str = Field(description="Overlay now carrying traffic, e.g. sleeve.")
    mtu: int = Field(0, description="Overlay MTU found (0 = not known yet).")
    encrypted: bool = Field(description="Whether the overlay encrypts.")


class OverlayFailed(Message):
    """weave.gossip.overlay_failed: no overlay works; the mesh connection is dropped."""

    peer: PeerNameField = Field(description="Remote peer.")
    conn_uid: int = Field(description="Connection.")
    reason: str = Field(description="Why, for the log.")


class OverlayConnectionsRequest(Message):
    """weave.gossip.connections: every current connection (a restarted datapath catches up)."""


class OverlayConnectionsReply(Message):
    connections: tuple[OverlayConnection, ...] = Field(description="Current connections.")
