"""ipBlock peers (weave:npc/ipblock.go): a CIDR, minus an optional `except` list.

The CIDR goes into the rule itself (`-s`/`-d`). The excepted CIDRs go into a hash:net
set matched negated. weave keys that set by the sorted except list alone, scoped to the
policy's namespace: two ipBlocks in one namespace with the same excepts share a set
whatever their CIDRs. weave-npc drives iptables (IPv4 only), so IPv6 is refused here.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from shared.errors import RemoteProtocolError

from .model import IPBlock
from .shortname import ipset_name


class CIDRError(RemoteProtocolError):
    """An ipBlock CIDR that is not an IPv4 prefix; the policy is rejected."""

    code = "bad_cidr"


@dataclass(frozen=True)
class IPBlockSpec:
    cidr: str                 # as the policy wrote it; iptables masks host bits itself
    excepts: tuple[str, ...]  # sorted, as weave sorts them
    ns_name: str

    @property
    def key(self) -> str:
        return " ".join(self.excepts)

    @property
    def ipset_name(self) -> str | None:
        """The except set, or None when there is nothing to except (no set needed)."""
        if not self.excepts:
            return None
        return ipset_name(f"{self.ns_name}:ipblock-except:{self.key}")

    @property
    def except_comment(self) -> str:
        """Comment on each member of the except set."""
        return "excepted from " + self.cidr

    def rule_spec(self, src: bool) -> tuple[tuple[str, ...], str]:
        """Match args and comment text for an iptables rule (weave's getRuleSpec)."""
        address = ("-s" if src else "-d", self.cidr)
        if self.ipset_name is None:
            return address, f"cidr: {self.cidr}"
        negated = ("-m", "set", "!", "--match-set", self.ipset_name, "src" if src else "dst")
        return address + negated, f"cidr: {self.cidr} except [{self.key}]"


def new_ip_block_spec(block: IPBlock, ns_name: str) -> IPBlockSpec:
    """Raises CIDRError for a malformed or non-IPv4 CIDR, in `cidr` or in `except`."""
    for cidr in (block.cidr, *block.except_):
        _check_cidr(cidr)
    return IPBlockSpec(block.cidr, tuple(sorted(block.except_)), ns_name)


def _check_cidr(cidr: str) -> None:
    if "/" not in cidr:
        raise CIDRError(f"invalid CIDR {cidr!r}: no prefix length", cidr=cidr)
    try:
        network = ipaddress.ip_network(cidr, strict=False)
    except ValueError as exc:
        raise CIDRError(f"invalid CIDR {cidr!r}: {exc}", cidr=cidr) from exc
    if network.version != 4:
        raise CIDRError(f"invalid CIDR {cidr!r}: weave-npc handles IPv4 only", cidr=cidr)
