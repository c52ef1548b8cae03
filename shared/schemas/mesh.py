"""Messages between the gossip service and the rest of the host: topology and gossip
channels (`weave.events.topology`, `weave.gossip.*`, `weave.mesh.<channel>.*`)."""
from __future__ import annotations

from pydantic import Field

from shared.schemas.base import Message


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
