"""Gossip channels: the envelope, the Gossiper protocol, relaying and pending sends
(mesh:gossip_channel.go, gossip.go, router.go `handleGossip`).

Envelope (message body after the tag byte): one gob stream of channel name (string),
source PeerName (uint), for unicast the destination PeerName (uint), then the channel's
payload ([]byte). How each tag travels:
- 4 Gossip: src is the peer that sent it to us. The owner's `on_gossip` returns what
  was new; that goes on to random neighbours other than src, with src = us.
- 5 GossipUnicast: not for us -> the same bytes go to the `unicast_all` next hop at
  once (no queue); for us -> `on_gossip_unicast`.
- 6 GossipBroadcast: src is the originator. `on_gossip_broadcast` returns what to pass
  on; it goes to `broadcast_all(src)`, src unchanged.

Pending sends (mesh gossipSender): per connection and channel, one pending gossip item
and one pending broadcast item per source. New data is merged into pending data, never
queued behind it, so a slow connection gets one up-to-date message, not a backlog.
`take`/`flush` encode pending data at that moment (topology is encoded from the state
current then), gossip before broadcasts.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from shared.weave.peer_name import PeerName
from services.gossip.surrogate_gossiper import GOSSIP_INTERVAL, SurrogateGossiper
from shared import gob
from shared.errors import LocalProtocolError, RemoteProtocolError

if TYPE_CHECKING:
    from services.gossip.peers import Peers
    from services.gossip.routes import Routes

GOSSIP = 4
GOSSIP_UNICAST = 5
GOSSIP_BROADCAST = 6
GOSSIP_TAGS = (GOSSIP, GOSSIP_UNICAST, GOSSIP_BROADCAST)
_UINT64_MAX = (1 << 64) - 1


class GossipData(Protocol):
    """A mergeable batch of channel state."""

    def encode(self) -> list[bytes]:
        """Payloads to send, one message each."""

    def merge(self, other: "GossipData") -> "GossipData":
        """This and `other` combined (a new value; neither is modified)."""


class Gossiper(Protocol):
    """What the owner of a channel implements. Raise RemoteProtocolError for bad
    payloads: the connection they came on is closed."""

    def on_gossip_unicast(self, src: PeerName, payload: bytes, now: float) -> None: ...

    def on_gossip_broadcast(self, src: PeerName, payload: bytes, now: float) -> GossipData | None:
        """Merge; return what to pass on (None: nothing)."""

    def gossip(self, now: float) -> GossipData | None:
        """Everything we know, for periodic gossip and new connections (None: nothing)."""

    def on_gossip(self, payload: bytes, now: float) -> GossipData | None:
        """Merge; return only what was new to us, or None."""


# --- envelope ----------------------------------------------------------------------


@dataclass(frozen=True)
class GossipEnvelope:
    channel: str
    src: PeerName
    dst: PeerName | None  # only for GOSSIP_UNICAST
    payload: bytes


def encode_envelope(channel: str, src: PeerName, payload: bytes, dst: PeerName | None = None) -> bytes:
    """The message body after the tag byte; give `dst` for a unicast."""
    enc = gob.Encoder()
    parts = [enc.encode(gob.STRING, channel), enc.encode(gob.UINT, int(src))]
    if dst is not None:
        parts.append(enc.encode(gob.UINT, int(dst)))
    parts.append(enc.encode(gob.BYTES, payload))
    return b"".join(parts)


def decode_envelope(tag: int, body: bytes) -> GossipEnvelope:
    """Parse a tag 4/5/6 body. RemoteProtocolError on malformed input."""
    channel, src, dst, dec = _decode_header(tag, body)
    return GossipEnvelope(channel, src, dst, _decode_payload(dec))


def _decode_header(tag: int, body: bytes) -> tuple[str, PeerName, PeerName | None, "gob.Decoder"]:
    if tag not in GOSSIP_TAGS:
        raise LocalProtocolError(f"tag {tag} is not a gossip tag", tag=tag)
    try:
        dec = gob.Decoder(body)
        channel = dec.decode(gob.STRING)
        src = _peer_name(dec.decode(gob.UINT))
        dst = _peer_name(dec.decode(gob.UINT)) if tag == GOSSIP_UNICAST else None
    except gob.GobError as e:
        raise RemoteProtocolError(f"bad gossip envelope: {e}", reason="gob", tag=tag) from e
    except gob.NeedMoreData as e:
        raise RemoteProtocolError("gossip envelope truncated", reason="truncated", tag=tag) from e
    return channel, src, dst, dec


def _decode_payload(dec: "gob.Decoder") -> bytes:
    try:
        return dec.decode(gob.BYTES)
    except gob.GobError as e:
        raise RemoteProtocolError(f"bad gossip payload: {e}", reason="gob") from e
    except gob.NeedMoreData as e:
        raise RemoteProtocolError("gossip payload truncated", reason="truncated") from e


def _peer_name(value: int) -> PeerName:
    if value > _UINT64_MAX:
        raise RemoteProtocolError(f"peer name {value} overflows uint64", reason="range")
    # mesh reads PeerName as a uint64; names above 48 bits never occur in mac flavour.
    if value >> 48:
        raise RemoteProtocolError(f"peer name {value:#x} exceeds 48 bits", reason="range")
    return PeerName(value)


# --- actions and pending state -------------------------------------------------------


@dataclass(frozen=True)
class Send:
    """Send `tag` + `body` as one message on our connection to neighbour `to`."""

    to: PeerName
    tag: int
    body: bytes

    @property
    def message(self) -> bytes:
        return bytes([self.tag]) + self.body


class GossipSender:
    """Pending gossip for one connection, merged per channel (and per broadcast source)."""

    def __init__(self) -> None:
        self._gossip: dict[str, GossipData] = {}
        self._broadcasts: dict[str, dict[PeerName, GossipData]] = {}

    def empty(self) -> bool:
        return not self._gossip and not self._broadcasts

    def send(self, channel: str, data: GossipData) -> None:
        pending = self._gossip.get(channel)
        self._gossip[channel] = data if pending is None else pending.merge(data)

    def broadcast(self, channel: str, src: PeerName, data: GossipData) -> None:
        by_src = self._broadcasts.setdefault(channel, {})
        pending = by_src.get(src)
        by_src[src] = data if pending is None else pending.merge(data)

    def take(self, ourself: PeerName) -> list[tuple[int, bytes]]:
        """Encode and clear everything pending: (tag, body) pairs, gossip first."""
        out: list[tuple[int, bytes]] = []
        for channel, data in self._gossip.items():
            out += [(GOSSIP, encode_envelope(channel, ourself, m)) for m in data.encode()]
        for channel, by_src in self._broadcasts.items():
            for src, data in by_src.items():
                out += [(GOSSIP_BROADCAST, encode_envelope(channel, src, m)) for m in data.encode()]
        self._gossip, self._broadcasts = {}, {}
        return out


# --- the channel set -----------------------------------------------------------------


class GossipChannels:
    """Our channels and the relaying of all gossip through us.

    `handle` takes a received message and returns unicasts to forward now; everything
    else lands in per-connection pending state that the shell drains with `take(peer)`
    (when that connection can write) or `flush()`. Routes are recalculated first if
    stale, as mesh does before choosing relays.
    """

    def __init__(
        self,
        peers: "Peers",
        routes: "Routes",
        rng: random.Random,
        gossip_interval: float = GOSSIP_INTERVAL,
    ) -> None:
        self._peers = peers
        self._routes = routes
        self._rng = rng
        self._interval = gossip_interval
        self._channels: dict[str, Gossiper] = {}
        self._senders: dict[PeerName, GossipSender] = {}

    @property
    def ourself(self) -> PeerName:
        return self._peers.ourself.name

    def register(self, channel: str, gossiper: Gossiper) -> None:
        """Own `channel` here. Register before traffic flows; twice is our bug."""
        if channel in self._channels:
            raise LocalProtocolError(f"duplicate gossip channel {channel!r}", channel=channel)
        self._channels[channel] = gossiper

    def gossiper(self, channel: str) -> Gossiper:
        """The owner of `channel`, creating a surrogate for a channel nobody owns."""
        owner = self._channels.get(channel)
        if owner is None:
            owner = self._channels[channel] = SurrogateGossiper(self._interval)
        return owner

    def channel_names(self) -> list[str]:
        return sorted(self._channels)

    # --- receiving ---------------------------------------------------------------------

    def handle(self, tag: int, body: bytes, now: float) -> list[Send]:
        """Process a received tag 4/5/6 message. Returns unicasts to forward now.
        Raises RemoteProtocolError (close that connection) on bad input."""
        channel, src, dst, dec = _decode_header(tag, body)
        owner = self.gossiper(channel)
        if tag == GOSSIP_UNICAST:
            if dst != self.ourself:
                return self._relay_unicast(dst, body)
            owner.on_gossip_unicast(src, _decode_payload(dec), now)
        elif tag == GOSSIP_BROADCAST:
            data = owner.on_gossip_broadcast(src, _decode_payload(dec), now)
            if data is not None:
                self._relay_broadcast(channel, src, data)
        else:
            data = owner.on_gossip(_decode_payload(dec), now)
            if data is not None:
                self._relay(channel, src, data)
        return []

    # --- sending (the mesh `Gossip` interface) ----------------------------------------

    def gossip_unicast(self, channel: str, dst: PeerName, payload: bytes) -> list[Send]:
        """Send `payload` to `dst` via the next hop; empty if `dst` is unreachable."""
        return self._relay_unicast(dst, encode_envelope(channel, self.ourself, payload, dst))

    def gossip_broadcast(self, channel: str, data: GossipData) -> None:
        """Broadcast our `data` to every peer (along our broadcast_all tree)."""
        self._relay_broadcast(channel, self.ourself, data)

    def gossip_neighbour_subset(self, channel: str, data: GossipData) -> None:
        """Gossip our `data` to random neighbours (how topology changes spread)."""
        self._relay(channel, self.ourself, data)

    def send_all_gossip(self, now: float) -> None:
        """The periodic round (every gossip interval): each channel's full state to
        random neighbours."""
        for channel in self.channel_names():
            data = self._channels[channel].gossip(now)
            if data is not None:
                self._relay(channel, self.ourself, data)

    def gossip_down(self, peer: PeerName, channel: str, data: GossipData) -> None:
        """Gossip `data` of `channel` to one neighbour only (a channel owner's catch-up)."""
        self._sender(peer).send(channel, data)

    def send_all_gossip_down(self, peer: PeerName, now: float) -> None:
        """Every channel's full state to one neighbour (a new or restarted peer)."""
        for channel in self.channel_names():
            data = self._channels[channel].gossip(now)
            if data is not None:
                self._sender(peer).send(channel, data)

    # --- draining ----------------------------------------------------------------------

    def pending_peers(self) -> list[PeerName]:
        return sorted(p for p, s in self._senders.items() if not s.empty())

    def take(self, peer: PeerName) -> list[Send]:
        """Encode and clear what is pending for `peer` (nothing if no longer connected)."""
        sender = self._senders.pop(peer, None)
        if sender is None or peer not in self._peers.ourself.connections:
            return []
        return [Send(peer, tag, body) for tag, body in sender.take(self.ourself)]

    def flush(self) -> list[Send]:
        """`take` for every peer with something pending, in name order."""
        out: list[Send] = []
        for peer in sorted(self._senders):
            out += self.take(peer)
        return out

    def connection_closed(self, peer: PeerName) -> None:
        """Drop what was pending for `peer`."""
        self._senders.pop(peer, None)

    # --- helpers -----------------------------------------------------------------------

    def _sender(self, peer: PeerName) -> GossipSender:
        return self._senders.setdefault(peer, GossipSender())

    def _connected(self, names: list[PeerName]) -> list[PeerName]:
        conns = self._peers.ourself.connections
        return [n for n in names if n in conns]

    def _relay_unicast(self, dst: PeerName, body: bytes) -> list[Send]:
        self._routes.ensure_recalculated()
        hop = self._routes.unicast_all(dst)
        if hop is None or hop not in self._peers.ourself.connections:
            return []  # mesh logs "unknown relay destination" and drops it
        return [Send(hop, GOSSIP_UNICAST, body)]

    def _relay_broadcast(self, channel: str, src: PeerName, data: GossipData) -> None:
        self._routes.ensure_recalculated()
        for peer in self._connected(self._routes.broadcast_all(src)):
            self._sender(peer).broadcast(channel, src, data)

    def _relay(self, channel: str, src: PeerName, data: GossipData) -> None:
        self._routes.ensure_recalculated()
        for peer in self._connected(self._routes.random_neighbours(src, self._rng)):
            self._sender(peer).send(channel, data)
