"""Where the sleeve meets the mesh and the other overlay (sans-I/O):

- control messages: the sleeve's own (sleeve.forwarder SendControl: sub-tag and body)
  travel as mesh messages on the connection, as Weave's overlay switch sends them:
  tag 7 (OVERLAY_CONTROL) with the sleeve's index among the connection's overlays,
  or, on a compat connection (a peer without the Overlays feature), Weave's raw tags
  1-3 (`control_to_mesh`, `control_from_mesh`);
- what a forwarder's verdicts say of the sleeve, for the overlay switch
  (`sleeve_word`, `renamed`): established (with its name, MTU and encryption), its
  MTU found, failed; the switch decides what gossip hears;
- `SleeveNextHops`: the topology's routes minus the peers the fastpath carries, for the
  broadcasts we start (the VXLAN device floods those to them).
"""
from __future__ import annotations

from collections.abc import Callable

from services.datapath.overlay_switch import SleeveStatus
from services.datapath.sleeve import frame as fr
from services.datapath.sleeve.forwarder import (Established, Failed, Forwarder, ForwarderState, MTUVerified,
                                                SendControl)
from services.datapath.topology import TopologyRoutes
from shared.schemas.mesh import OverlayConnection, OverlaySend
from shared.weave.peer_name import PeerName
from shared.weave.protocol_tags import ProtocolTag

OVERLAY = "sleeve"
FAST_SLEEVE = "fast-sleeve"
"""How gossip's status names the sleeve to a peer that takes our offloaded superframes
(a weave-py peer whose kernel reassembles our fragments): negotiated inside the sleeve
(control sub-tag 0x80), so the overlay both ends agreed on stays `sleeve`."""
_COMPAT_TAGS = (ProtocolTag.RESERVED1, ProtocolTag.RESERVED2, ProtocolTag.RESERVED3)


def control_to_mesh(conn: OverlayConnection, action: SendControl) -> OverlaySend:
    """The gossip service's request that writes `action` on the connection."""
    body = action.mesh_message(None if conn.compat else conn.overlays.index(OVERLAY))
    return OverlaySend(peer=conn.peer, conn_uid=conn.conn_uid, tag=body[0], payload=body[1:])


def control_from_mesh(conn: OverlayConnection, tag: int, payload: bytes) -> tuple[int, bytes] | None:
    """(sleeve sub-tag, body) of a control message, or None if it is for another overlay."""
    if tag == ProtocolTag.OVERLAY_CONTROL:
        if len(payload) < 2 or payload[0] >= len(conn.overlays) or conn.overlays[payload[0]] != OVERLAY:
            return None
        return payload[1], payload[2:]
    if tag in _COMPAT_TAGS and conn.compat:
        return tag, payload
    return None


def sleeve_name(fwd: Forwarder) -> str:
    return FAST_SLEEVE if fwd.takes_offload(fwd.remote) else OVERLAY


def status(fwd: Forwarder) -> SleeveStatus:
    """The sleeve of `fwd` as it is now (MTU 0 while the default is not verified)."""
    mtu = fwd.mtu if fwd.mtu != fr.DEFAULT_MTU else 0
    return SleeveStatus(sleeve_name(fwd), mtu, fwd.encrypted, fwd.state is ForwarderState.ESTABLISHED)


def sleeve_word(fwd: Forwarder, action) -> SleeveStatus | None:
    """What forwarder action `action` tells the switch: established; the MTU found
    (once established, or on a resumed connection, which gossip already shows as
    established); failed. None: nothing (a packet, a control message)."""
    if isinstance(action, Failed):
        return SleeveStatus(OVERLAY, 0, fwd.encrypted, False, failed=action.reason)
    if isinstance(action, Established) or (isinstance(action, MTUVerified)
                                           and (fwd.state is ForwarderState.ESTABLISHED or fwd.resumed)):
        return status(fwd)
    return None


def renamed(fwd: Forwarder, before: str) -> SleeveStatus | None:
    """After a control message: the established sleeve became (or stopped being) the
    fast sleeve, which gossip's status names; None if nothing to tell."""
    if sleeve_name(fwd) != before and fwd.state is ForwarderState.ESTABLISHED:
        return status(fwd)
    return None


class SleeveNextHops:
    """The topology's routes (a sleeve.frame_router.NextHops), minus the peers
    `fast_peers()` names for broadcasts we start: the VXLAN device floods those to
    them. `fast_peers` is asked at every broadcast, so no copy of the set is kept here."""

    def __init__(self, routes: TopologyRoutes, fast_peers: Callable[[], frozenset[PeerName]]) -> None:
        self.routes, self.fast_peers = routes, fast_peers

    def unicast(self, name: int) -> int | None:
        return self.routes.unicast(name)

    def broadcast(self, source: int) -> list[int]:
        hops = self.routes.broadcast(source)
        if source == self.routes.ourself:
            fast = self.fast_peers()
            if fast:
                return [h for h in hops if h not in fast]
        return hops
