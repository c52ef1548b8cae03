"""Messages between the gossip service and the rest of the host: topology and gossip
channels (`weave.events.topology`, `weave.gossip.*`, `weave.mesh.<channel>.*`)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from shared.schemas.base import Message

IPAM_CHANNEL = "IPallocation"  # Weave Net's IPAM gossip channel
DNS_CHANNEL = "nameserver"  # Weave Net's weaveDNS gossip channel
POLICY_CHANNEL = "weave-py-policy"  # ours: network policies applied with `weave policy`
BUS_CHANNELS = (IPAM_CHANNEL, DNS_CHANNEL, POLICY_CHANNEL)
"""Channels the gossip service bridges to local owners; any other is relayed only."""


class PeerInfo(Message):
    """One peer of the mesh as the local router knows it."""

    name: str = Field(description="Peer name, MAC form (aa:bb:cc:dd:ee:ff).")
    nickname: str = Field(description="Peer nickname (its hostname by default).")
    uid: int = Field(description="Peer UID (changes at every restart of that peer's router).")
    short_id: int = Field(description="12-bit short id (fastdp VXLAN VNI).")
    reachable: bool = Field(description="A route to it exists over established connections.")
    address: str = Field("", description="Underlay IP of our direct connection to it, if any.")


class TopologyEvent(Message):
    """The mesh changed. Published on weave.events.topology; also the reply to PeersRequest."""

    ourself: str = Field(description="Our own peer name.")
    peers: tuple[PeerInfo, ...] = Field(description="Every known peer, ourselves included.")
    removed: tuple[str, ...] = Field((), description="Peers forgotten since the last event (garbage collected).")


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
    dst: str | None = Field(None, description="Peer name: unicast target, or the neighbour for gossip.")


class MeshReceive(Message):
    """Gossip the mesh delivered for a channel (published on weave.mesh.<channel>.in).

    The gossip service has already relayed it as mesh does for a channel it does not
    interpret; the owner only merges it. `src` is the originator for broadcast and
    unicast; for gossip mesh does not say who relayed it, so it is 00:00:00:00:00:00.
    """

    kind: Literal["broadcast", "unicast", "gossip"] = Field(description="How it arrived.")
    src: str = Field(description="Peer name of the sender (see above).")
    payload: bytes = Field(description="The channel's own encoding.")
