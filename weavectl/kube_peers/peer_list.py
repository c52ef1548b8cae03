"""Weave's record of the peers of a cluster, kept as annotations of the `weave-net`
ConfigMap in kube-system (weaveworks/weave prog/kube-utils: annotations.go, peerlist.go).
Pure functions of the annotations map; the contract, byte for byte:

- `kube-peers.weave.works/peers`: Go's json.Marshal of
  `{"Peers":[{"PeerName":"<weave peer name>","NodeName":"<Kubernetes node name>"},...]}`
  (a null or missing Peers reads as empty), one entry per peer that ever started on a
  node of the cluster and has not been reclaimed;
- `kube-peers.weave.works/<peer name, ':' -> '_'>`: the peer name of whoever is
  reclaiming that peer (the claim that lets one node at a time reclaim it).
Keys are cleaned as Weave's cleanKey does: anything but [A-Za-z0-9-_./] becomes '_'.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from shared.errors import RemoteProtocolError

CONFIGMAP_NAMESPACE, CONFIGMAP_NAME = "kube-system", "weave-net"
PREFIX = "kube-peers.weave.works/"
PEERS_KEY = PREFIX + "peers"
_UNCLEAN = re.compile(r"[^A-Za-z0-9\-_./]")

Annotations = Mapping[str, str]


@dataclass(frozen=True)
class PeerInfo:
    peer_name: str  # Weave's unique peer name (aa:bb:cc:dd:ee:ff)
    node_name: str  # the Kubernetes node it ran on


def clean_key(key: str) -> str:
    return _UNCLEAN.sub("_", key)


def claim_key(peer_name: str) -> str:
    """The annotation naming who reclaims `peer_name`."""
    return clean_key(PREFIX + peer_name)


def peer_list(annotations: Annotations) -> tuple[PeerInfo, ...]:
    """The stored peer list. Raises RemoteProtocolError if the annotation is not Weave's JSON."""
    raw = annotations.get(PEERS_KEY)
    if raw is None:
        return ()
    try:
        record = json.loads(raw)
        return tuple(PeerInfo(str(p["PeerName"]), str(p.get("NodeName", ""))) for p in record.get("Peers") or ())
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise RemoteProtocolError(f"the {PEERS_KEY} annotation is not a peer list: {raw[:80]!r}",
                                  code="bad_peer_list") from exc


def encode_peer_list(peers: tuple[PeerInfo, ...] | list[PeerInfo]) -> str:
    """Go's json.Marshal of peerList: field order PeerName, NodeName; no spaces."""
    return json.dumps({"Peers": [{"PeerName": p.peer_name, "NodeName": p.node_name} for p in peers]},
                      separators=(",", ":"))


def contains(annotations: Annotations, peer_name: str) -> bool:
    return any(p.peer_name == peer_name for p in peer_list(annotations))


def with_peer(annotations: Annotations, peer_name: str, node_name: str) -> dict[str, str] | None:
    """addMyselfToPeerList: the annotations with (peer, node) added; None if it is there."""
    peers = peer_list(annotations)
    if any(p.peer_name == peer_name for p in peers):
        return None
    return {**annotations, PEERS_KEY: encode_peer_list((*peers, PeerInfo(peer_name, node_name)))}


def reclaimable(annotations: Annotations, nodes: frozenset[str], me: str, my_node: str) -> tuple[PeerInfo, ...]:
    """Weave's step 2: peers of the list that no Node claims (or that name our node but
    are not us: an earlier incarnation of this node). Never ourselves."""
    return tuple(p for p in peer_list(annotations)
                 if p.peer_name != me and (p.node_name not in nodes or p.node_name == my_node))


def own_stale_claims(annotations: Annotations, me: str) -> tuple[str, ...]:
    """Peers we claimed that are no longer in the list: someone finished them, or we
    did and restarted before dropping the claim. (Weave leaves these forever; we drop
    them on our next pass. Claims of a dead claimer go when it is reclaimed, 7aa.)"""
    listed = {claim_key(p.peer_name) for p in peer_list(annotations)}
    # the key's ':' became '_'; that cleaned name still finds the claim (claim_key is idempotent)
    return tuple(sorted(k.removeprefix(PREFIX) for k, v in annotations.items()
                        if k.startswith(PREFIX) and k != PEERS_KEY and v == me and k not in listed))


def claimant(annotations: Annotations, peer_name: str) -> str | None:
    """Who claimed the reclaim of peer_name (None: nobody)."""
    return annotations.get(claim_key(peer_name))


def with_claim(annotations: Annotations, peer_name: str, me: str) -> dict[str, str]:
    return {**annotations, claim_key(peer_name): me}


def released(annotations: Annotations, peer_name: str) -> dict[str, str]:
    """Weave's steps 7aa, 7a and 7b in one: claims *made by* the reclaimed peer dropped
    (it was reclaiming someone when it died), the peer dropped from the list, and the
    claim on it dropped."""
    out = {k: v for k, v in annotations.items() if v != peer_name and k != claim_key(peer_name)}
    peers = peer_list(annotations)
    if any(p.peer_name == peer_name for p in peers):
        out[PEERS_KEY] = encode_peer_list([p for p in peers if p.peer_name != peer_name])
    elif PEERS_KEY in annotations:
        out[PEERS_KEY] = annotations[PEERS_KEY]  # written as it was (Weave leaves it alone)
    return out
