"""The npc service's bus API (`weave.npc.apply|delete|list|status|blocked`), used by `weave policy`
and (blocked) by Scope's probe.

Policies applied here are stored on the host, gossiped to every host on the
`weave-py-policy` channel, and enforced everywhere. `apply` is all or nothing: if one
document is refused (unparseable, a named port, a bad CIDR, an unknown protocol...)
the reply is a `bad_request` error naming it and the reason, and nothing changes.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from shared.schemas.base import Message

ObjectKind = Literal["NetworkPolicy", "Namespace"]


class ObjectRef(Message):
    """One object of the policy store."""

    kind: ObjectKind = Field(description="NetworkPolicy, or Namespace (its labels, for namespaceSelector).")
    namespace: str = Field("", description="Namespace of a NetworkPolicy; '' for a Namespace.")
    name: str = Field(description="metadata.name.")


class ApplyRequest(Message):
    """Store and enforce every NetworkPolicy and Namespace in `manifest` (weave.npc.apply)."""

    manifest: str = Field(description="YAML or JSON text: one or many documents; `kind: List` is flattened.")


class ApplyReply(Message):
    """What `apply` did."""

    changed: tuple[ObjectRef, ...] = Field(description="Objects stored with a new version.")
    unchanged: tuple[ObjectRef, ...] = Field(description="Objects already stored exactly so.")
    enforced: bool = Field(description="This host's kernel held the result before the reply (other hosts follow "
                                       "by gossip); False if that took longer than the service waits.")


class DeleteRequest(Message):
    """Remove one stored object everywhere (weave.npc.delete); `not_found` if absent."""

    kind: ObjectKind = Field("NetworkPolicy", description="What to delete.")
    namespace: str = Field("default", description="Namespace of the NetworkPolicy (ignored for a Namespace).")
    name: str = Field(description="metadata.name.")


class DeleteReply(Message):
    """What `delete` did."""

    deleted: ObjectRef = Field(description="The object now tombstoned everywhere.")
    enforced: bool = Field(description="As in ApplyReply.")


class ListRequest(Message):
    """Every stored object and whether it is enforced (weave.npc.list)."""


class PolicyInfo(Message):
    """One object the host knows, from the gossiped store or from Kubernetes."""

    ref: ObjectRef = Field(description="Which object.")
    source: Literal["weave", "kubernetes"] = Field(description="`weave policy apply` (gossiped) or the API server.")
    origin: str = Field("", description="Peer that wrote the current version ('' for Kubernetes objects).")
    version: int = Field(0, description="Version in the gossiped store (0 for Kubernetes objects).")
    enforced: bool = Field(description="False when this host's compiler refused it (see `reason`).")
    reason: str = Field("", description="Why it is not enforced; '' when it is.")


class ListReply(Message):
    """The answer to ListRequest, sorted by kind, namespace, name."""

    objects: tuple[PolicyInfo, ...] = Field(description="Every live object.")


class StatusRequest(Message):
    """The npc service's counters (weave.npc.status)."""


class StatusReply(Message):
    """What the npc service enforces on this host right now."""

    policies: int = Field(description="NetworkPolicies known (all sources).")
    rejected: int = Field(description="Of those, refused by the compiler.")
    namespaces: int = Field(description="Namespaces known (explicit or implied by pods and policies).")
    pods: int = Field(description="Pod addresses known, on every host.")
    local_pods: int = Field(description="Of those, attached on this host.")
    rules: int = Field(description="Rules in weave-npc's chains (desired state).")
    chains: int = Field(description="weave-npc chains.")
    ipsets: int = Field(description="weave-npc ipsets.")
    ipset_members: int = Field(description="Members across those ipsets.")
    backend: str = Field(description="iptables backend in use: nft or legacy ('' before the first sync).")
    synced: bool = Field(description="The kernel matched the desired state at the last attempt.")
    last_sync_unix: float = Field(description="Unix time of the last successful sync (0 = never).")
    enforcement_errors: int = Field(description="Failed apply attempts (weavenpc_policy_enforcement_errors).")
    blocked_connections: int = Field(description="Connection attempts blocked and logged since start.")


class BlockedRequest(Message):
    """Recent connection attempts this host's npc blocked (weave.npc.blocked)."""

    since_unix: float = Field(0.0, description="Only attempts logged at or after this Unix time (0 = all kept).")


class BlockedFlow(Message):
    """One blocked connection attempt, as weave-npc logs it (a TCP SYN or a UDP packet)."""

    protocol: Literal["tcp", "udp"] = Field(description="Transport protocol.")
    src: str = Field(description="Source address.")
    sport: int = Field(description="Source port.")
    dst: str = Field(description="Destination address.")
    dport: int = Field(description="Destination port.")
    at_unix: float = Field(description="When it was logged, Unix seconds (the last time, if it was retried).")
    count: int = Field(1, description="Packets of this attempt logged (TCP retransmits of the SYN).")


class BlockedReply(Message):
    """The answer to BlockedRequest, oldest first."""

    flows: tuple[BlockedFlow, ...] = Field(description="The attempts kept (at most `capacity`, the most recent).")
    total: int = Field(description="Attempts blocked and logged since npc started.")
    capacity: int = Field(description="How many attempts npc keeps.")
