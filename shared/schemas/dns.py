"""The dns service's bus API (`weave.dns.add|remove|lookup|list`).

DNS queries never travel on the bus: each host's dns service answers them from its own
store. These requests are for registering and inspecting names; Weave's HTTP routes
(/name, /domain, /dns-address) are served too, forwarded by the gossip service.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from shared.schemas.base import Message, PeerNameField


class DnsEntryInfo(Message):
    """One weaveDNS record, as /report `DNS.Entries` shows it."""

    hostname: str = Field(description="Fully qualified name, case as registered (e.g. web.weave.local.).")
    origin: PeerNameField = Field(description="Peer name of the host that registered it (only it may change it).")
    container_id: str = Field(description="Container the name belongs to (weave:extern for dns-add without one).")
    address: str = Field(description="IPv4 address, dotted quad.")
    version: int = Field(description="Bumped by the origin at each change (tombstone, revival).")
    tombstone: int = Field(description="Unix seconds of deletion; 0 while the entry is live.")


class AddRequest(Message):
    """Register `fqdn` -> `ip` for `container_id` on this host (as PUT /name/{container}/{ip}).
    A name outside the weaveDNS domain is ignored, as Weave does: the reply lists nothing."""

    container_id: str = Field(description="Container id, or weave:extern for an address outside weave.")
    ip: str = Field(description="IPv4 address, dotted quad.")
    fqdn: str = Field(description="The name; a trailing dot is added if missing.")


class RemoveRequest(Message):
    """Tombstone this host's live entries matching every given field (None = any), as
    DELETE /name[/{container}[/{ip}]][?fqdn=...]."""

    container_id: str | None = Field(None, description="Only entries of this container.")
    ip: str | None = Field(None, description="Only entries with this IPv4 address.")
    fqdn: str | None = Field(None, description="Only entries with exactly this name (trailing dot added).")


class ChangeReply(Message):
    """What an add or remove changed on this host (what was broadcast to the mesh)."""

    kind: Literal["changed"] = Field("changed", description="Reply tag.")
    entries: tuple[DnsEntryInfo, ...] = Field(description="Entries added, revived or tombstoned; may be empty.")


class LookupRequest(Message):
    """Addresses of a name, from this host's store (what an A query would answer)."""

    name: str = Field(description="A name; a single label is looked up in the weaveDNS domain.")


class LookupReply(Message):
    """The live addresses of a name."""

    kind: Literal["lookup"] = Field("lookup", description="Reply tag.")
    name: str = Field(description="The fully qualified name that was looked up.")
    addresses: tuple[str, ...] = Field(description="IPv4 addresses of its live entries, in stored order.")


class ListRequest(Message):
    """Every entry this host knows, from every peer."""

    tombstones: bool = Field(False, description="Include tombstoned entries.")


class ListReply(Message):
    """This host's weaveDNS store."""

    kind: Literal["entries"] = Field("entries", description="Reply tag.")
    domain: str = Field(description="The weaveDNS domain, e.g. weave.local.")
    entries: tuple[DnsEntryInfo, ...] = Field(description="Entries in stored (case-insensitive name) order.")
