"""NPCState: the part of a host's netfilter state weave-npc owns.

The compiler (policy.py) produces the desired one; the planner (plan.py) compares it
with what `iptables-save` / `ipset save` report and writes the restore scripts.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from .ipset import IPSet
from .iptables import Rule


@dataclass(frozen=True)
class NPCState:
    """
    chains: every WEAVE-NPC* chain -> its full content, in order, canonical form.
    ipsets: every set weave-npc wants -> its members.
    hooks:  builtin chain (FORWARD, INPUT) -> rules that must be in it, in this order;
            the rest of a builtin chain belongs to others and is left alone.
    """

    chains: Mapping[str, tuple[Rule, ...]] = field(default_factory=dict)
    ipsets: Mapping[str, IPSet] = field(default_factory=dict)
    hooks: Mapping[str, tuple[Rule, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("chains", "ipsets", "hooks"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))
