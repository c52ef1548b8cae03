"""Policy rules as iptables args, and reference counting (weave:npc/rule.go, types.go).

A rule spec is the match part of a rule, in weave's argument order:
    [-p PROTO] [SRC-SPEC] [DST-SPEC] [--dport PORT] -m comment --comment "SRC -> DST (TYPE)"
Its key is those args joined by spaces; the comment is part of the key, so the same
match for ingress and for egress are two rules. Ingress specs become one rule in
WEAVE-NPC-INGRESS (`-j ACCEPT`); egress specs two in WEAVE-NPC-EGRESS-CUSTOM
(`-j WEAVE-NPC-EGRESS-ACCEPT`, which marks, then `-j RETURN`), in that order.
"""
from __future__ import annotations

import enum
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from . import chains


class PolicyType(str, enum.Enum):
    INGRESS = "ingress"
    EGRESS = "egress"


class RuleHost(Protocol):
    """A source or destination of a rule: a selector spec or an ipBlock spec."""

    def rule_spec(self, src: bool) -> tuple[tuple[str, ...], str]: ...


@dataclass(frozen=True)
class RuleSpec:
    policy_type: PolicyType
    args: tuple[str, ...]

    @property
    def key(self) -> str:
        return " ".join(self.args)

    @property
    def chain(self) -> str:
        return chains.EGRESS_CUSTOM if self.policy_type is PolicyType.EGRESS else chains.INGRESS

    def iptables_rules(self) -> tuple[tuple[str, ...], ...]:
        """The rules (weave's args, jump last) that this spec puts in `chain`, in order."""
        if self.policy_type is PolicyType.INGRESS:
            return (self.args + ("-j", "ACCEPT"),)
        return (self.args + ("-j", chains.EGRESS_MARK_CHAIN), self.args + ("-j", "RETURN"))


def new_rule_spec(
    policy_type: PolicyType,
    proto: str | None,
    src: RuleHost | None,
    dst: RuleHost | None,
    dport: str | None,
) -> RuleSpec:
    """`None` src/dst means anywhere; `None` proto/dport means no such match."""
    args: list[str] = []
    if proto is not None:
        args += ["-p", proto]
    src_comment = dst_comment = "anywhere"
    if src is not None:
        match, src_comment = src.rule_spec(True)
        args += match
    if dst is not None:
        match, dst_comment = dst.rule_spec(False)
        args += match
    if dport is not None:
        args += ["--dport", dport]
    args += ["-m", "comment", "--comment", f"{src_comment} -> {dst_comment} ({policy_type.value})"]
    return RuleSpec(policy_type, tuple(args))


K = TypeVar("K", bound=Hashable)


class RefCount(Generic[K]):
    """Which users (policy UIDs) want each key (a rule key, an ipset name).

    A key exists while it has a user: `provision` reports the keys that just gained
    their first user (to create), `deprovision` those that just lost their last (to
    remove). Provisioning a key twice for one user is harmless, like a set.
    """

    def __init__(self) -> None:
        self._users: dict[K, set[str]] = {}

    def provision(self, user: str, keys: Iterable[K]) -> list[K]:
        created = []
        for key in keys:
            users = self._users.setdefault(key, set())
            if not users:
                created.append(key)
            users.add(user)
        return created

    def deprovision(self, user: str, keys: Iterable[K]) -> list[K]:
        removed = []
        for key in keys:
            users = self._users.get(key)
            if users is None or user not in users:
                continue
            users.discard(user)
            if not users:
                del self._users[key]
                removed.append(key)
        return removed

    def users(self, key: K) -> frozenset[str]:
        return frozenset(self._users.get(key, ()))

    def __contains__(self, key: object) -> bool:
        return key in self._users

    def __iter__(self):
        return iter(self._users)

    def __len__(self) -> int:
        return len(self._users)
