"""Handing ranges over: who inherits ours when we leave, and whom `rmpeer` names
(weave:ipam/allocator.go `pickPeerForTransfer`, `lookupPeername`)."""
from __future__ import annotations

from typing import Callable, Iterable, Mapping

from shared.weave.peer_name import UNKNOWN_PEER_NAME, PeerName
from services.ipam.ring import Ring


def pick_heir(ring: Ring, nicknames: Mapping[PeerName, str], us: PeerName,
              is_known: Callable[[PeerName], bool]) -> PeerName:
    """The peer to give our ranges to, in Weave's order of preference: a reachable
    peer that has ranges; a reachable peer that runs IPAM (we know its nickname); any
    peer with ranges; any IPAM peer we heard of. UNKNOWN_PEER_NAME if there is none."""
    others = [n for n in nicknames if n != us]
    candidates = (
        lambda: ring.pick_peer_for_transfer(is_known),
        lambda: next((n for n in others if is_known(n)), UNKNOWN_PEER_NAME),
        lambda: ring.pick_peer_for_transfer(lambda _: True),
        lambda: next(iter(others), UNKNOWN_PEER_NAME),
    )
    for candidate in candidates:
        heir = candidate()
        if heir != UNKNOWN_PEER_NAME:
            return heir
    return UNKNOWN_PEER_NAME


def lookup_peername(nicknames: Mapping[PeerName, str], text: str) -> PeerName | None:
    """A peer by nickname, else by name (`aa:bb:..`); None if it is neither. Our own
    nickname map is used because the peer may be long gone from the mesh."""
    for name, nickname in nicknames.items():
        if nickname == text:
            return name
    try:
        return PeerName.parse(text)
    except ValueError:
        return None


def annotate(nicknames: Mapping[PeerName, str], names: Iterable[PeerName]) -> str:
    """Names for a log or error, as Go's %v prints Weave's annotatePeernames:
    `[aa:00:00:00:00:01(h1) aa:00:00:00:00:02]`."""
    return "[" + " ".join(f"{n}({nicknames[n]})" if n in nicknames else str(n) for n in names) + "]"
