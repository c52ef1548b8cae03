"""From current to desired NPCState: three scripts, applied in this order.

    1. ipset_before  (`ipset restore`)            create new sets; fill new except sets;
                                                  remove members that no longer allow;
                                                  add members that now deny (excepts)
    2. iptables      (`iptables-restore --noflush`) every chain and hook change, in one
                                                  COMMIT, so the kernel swaps them atomically
    3. ipset_after   (`ipset restore`)            add members that now allow; remove
                                                  excepts that no longer deny; destroy
                                                  sets nothing references (list:sets first)

Why this order: a set must exist before a rule or list:set names it, and can only be
destroyed once nothing does. Beyond that, each step only tightens until the rules
switch and only loosens after, so no intermediate state lets through traffic that
neither the old nor the new policies allow: before the switch the old rules see fewer
allowed members, after it the new rules see a subset of their final members. (It
fails closed: a pod newly targeted by a policy leaves its default-allow set in step 1,
and the peers its rules allow join their sets in step 3.)

Within the iptables COMMIT: a missing chain is declared (`:CHAIN - [0:0]`); a static
chain (order matters) that differs at all is re-declared, which flushes it, and
refilled; a dynamic chain is patched with `-D` for unwanted rules and `-A` for missing
ones, unless that would put a rule after its egress twin (RETURN before MARK), in which
case it too is rewritten. A chain found flushed is thus refilled. If FORWARD lacks a
hook rule, or has them out of order, the present ones are deleted and all re-inserted
at the top, in order (weave's ensureRulesAtTop; others' rules in between are fine);
missing INPUT hooks are appended (AppendUnique). Each `-D` must match a present rule
or iptables-restore fails the whole COMMIT: after a failure, re-read the state.

The scripts hold raw ipset names (`weave-;rGq...$3]6!N`): feed them on stdin, never
through a shell command line.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from . import chains
from .ipset import (DEFAULT_MAX_LIST_SIZE, IPSet, IPSetType, add_line, create_line, del_line, destroy_line,
                    is_ours)
from .iptables import Rule, rule_line
from .state import NPCState


@dataclass(frozen=True)
class Plan:
    ipset_before: str
    iptables: str
    ipset_after: str

    @property
    def empty(self) -> bool:
        return not (self.ipset_before or self.iptables or self.ipset_after)


def plan_update(
    desired: NPCState,
    current_chains: Mapping[str, Sequence[Rule]],
    current_sets: Mapping[str, IPSet],
    *,
    max_list_size: int = DEFAULT_MAX_LIST_SIZE,
    comments: bool = True,
) -> Plan:
    """`current_chains`: parse_iptables_save() of the filter table; a hook chain it
    does not list (FORWARD, INPUT) is taken as unknown and its hooks are left alone.
    `current_sets`: parse_ipset_save() (or the last desired sets). Only weave-npc's
    own sets are created, changed or destroyed."""
    before, after = _ipset_lines(desired.ipsets, current_sets, max_list_size, comments)
    return Plan(_script(before), _iptables_script(desired, current_chains), _script(after))


def _script(lines: list[str]) -> str:
    return "".join(line + "\n" for line in lines)


# ---- iptables -------------------------------------------------------------------

def _iptables_script(desired: NPCState, current: Mapping[str, Sequence[Rule]]) -> str:
    declare: list[str] = []
    body: list[str] = []
    for name, rules in desired.chains.items():
        have = current.get(name)
        if have is None or (name not in chains.DYNAMIC_CHAINS and list(have) != list(rules)):
            declare.append(f":{name} - [0:0]")
            body += [rule_line("-A", name, r) for r in rules]
        else:
            fresh, lines = _patch_chain(name, list(have), list(rules))
            declare += fresh
            body += lines
    for name, rules in desired.hooks.items():
        if name in current:
            body += _hook_lines(name, list(current[name]), list(rules))
    if not declare and not body:
        return ""
    return _script(["*filter", *declare, *body, "COMMIT"])


def _patch_chain(name: str, have: list[Rule], want: list[Rule]) -> tuple[list[str], list[str]]:
    """(chain declarations, rule lines) turning `have` into `want` up to the order of
    unrelated rules."""
    wanted = Counter(want)
    seen: Counter[Rule] = Counter()
    deletes = []
    for rule in have:
        seen[rule] += 1
        if seen[rule] > wanted[rule]:
            deletes.append(rule)
    result = list(have)
    for rule in deletes:
        result.remove(rule)  # `-D` removes the first match, as iptables does
    present = Counter(result)
    appends = []
    for rule in want:
        if present[rule]:
            present[rule] -= 1
        else:
            appends.append(rule)
    if not _twins_in_order(result + appends, want):
        return [f":{name} - [0:0]"], [rule_line("-A", name, r) for r in want]
    return [], [rule_line("-D", name, r) for r in deletes] + [rule_line("-A", name, r) for r in appends]


def _twins_in_order(result: list[Rule], want: list[Rule]) -> bool:
    """Rules with the same match (egress MARK/RETURN pairs) keep their wanted order."""
    def by_match(rules: list[Rule]) -> dict[Rule, list[Rule]]:
        groups: dict[Rule, list[Rule]] = {}
        for rule in rules:
            cut = rule.index("-j") if "-j" in rule else len(rule)
            groups.setdefault(rule[:cut], []).append(rule)
        return groups
    return by_match(result) == by_match(want)


def _hook_lines(chain: str, have: list[Rule], want: list[Rule]) -> list[str]:
    if chain not in chains.HOOKS_AT_TOP:
        return [rule_line("-A", chain, r) for r in want if r not in have]
    if _in_order(have, want):
        return []
    lines = [rule_line("-D", chain, r) for r in have if r in want]
    return lines + [rule_line("-I", chain, r, position=i) for i, r in enumerate(want, 1)]


def _in_order(have: list[Rule], want: list[Rule]) -> bool:
    """`want` appears in `have` as a subsequence (others' rules may sit in between)."""
    it = iter(have)
    return all(any(r == h for h in it) for r in want)


# ---- ipsets ---------------------------------------------------------------------

def _ipset_lines(
    desired: Mapping[str, IPSet], current: Mapping[str, IPSet], max_list_size: int, comments: bool
) -> tuple[list[str], list[str]]:
    before: list[str] = []
    after: list[str] = []
    for name, want in desired.items():
        have = current.get(name)
        if have is None:
            before.append(create_line(want, max_list_size=max_list_size, comments=comments))
            have = IPSet(name, want.type, {}, negated=want.negated)
        adds, dels = _member_changes(have, want, comments)
        # Negated (except) sets deny with their members: grow them early, shrink late.
        before += adds if want.negated else dels
        after += dels if want.negated else adds
    doomed = [s for n, s in current.items() if is_ours(n) and n not in desired]
    doomed.sort(key=lambda s: s.type is not IPSetType.LIST_SET)  # release members first
    after += [destroy_line(s.name) for s in doomed]
    return before, after


def _member_changes(have: IPSet, want: IPSet, comments: bool) -> tuple[list[str], list[str]]:
    have_members = have.normalized()
    want_members = want.normalized()
    adds = [add_line(want.name, m, want.members[m], comments=comments)
            for key, m in want_members.items() if key not in have_members]
    dels = [del_line(want.name, have_members[key]) for key in sorted(have_members) if key not in want_members]
    return adds, dels
