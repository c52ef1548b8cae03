"""ipsets as weave-npc keeps them: the model, `ipset save` parsing, `ipset restore` lines.

Three set types (weave:net/ipset/ipset.go):
- hash:ip   pod IPs: a selector's pods, a namespace's pods, default-allow sets;
- hash:net  the `except` CIDRs of an ipBlock (matched negated, `! --match-set`);
- list:set  a namespace selector: the all-pods hash:ip sets of matching namespaces.
weave creates them as `create NAME TYPE [size MAX] comment` and adds members with
`comment "..."`; we write the same so `ipset list` reads the same.
"""
from __future__ import annotations

import enum
import functools
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from shared.errors import RemoteProtocolError

from .shortname import IPSET_NAME_PREFIX

# weave-npc's default --max-list-size, the capacity of a list:set.
DEFAULT_MAX_LIST_SIZE = 1024

# Sets under weave's prefix that belong to someone else (weaver's nat-table set);
# weave-npc never touches them.
FOREIGN_IPSETS = frozenset({"weave-no-masq-local"})


class IPSetType(str, enum.Enum):
    HASH_IP = "hash:ip"
    HASH_NET = "hash:net"
    LIST_SET = "list:set"


@dataclass(frozen=True)
class IPSet:
    """A set and its members; `members` maps member -> comment, in insertion order.

    `negated` marks a set that rules match with `! --match-set` (ipBlock excepts): for
    such a set adding members denies more, for the others it allows more. The update
    planner orders member changes by this (see plan.py).
    """

    name: str
    type: IPSetType
    members: Mapping[str, str] = field(default_factory=dict)
    negated: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "members", MappingProxyType(dict(self.members)))

    def normalized(self) -> dict[str, str]:
        """Members keyed as the kernel stores them (see `normalize_member`)."""
        return {normalize_member(self.type, m): m for m in self.members}


@functools.lru_cache(maxsize=1 << 16)
def normalize_member(set_type: IPSetType, member: str) -> str:
    """The member as `ipset save` prints it: hash:net masks host bits and drops "/32";
    addresses are printed canonically; list:set members are set names. (Cached: a
    plan normalizes every member of every set, desired and current.)"""
    if set_type is IPSetType.LIST_SET:
        return member
    try:
        if set_type is IPSetType.HASH_NET:
            net = ipaddress.ip_network(member, strict=False)
            return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)
        return str(ipaddress.ip_address(member))
    except ValueError:
        return member


def is_ours(name: str) -> bool:
    """A set weave-npc owns and may destroy when nothing wants it any more."""
    return name.startswith(IPSET_NAME_PREFIX) and name not in FOREIGN_IPSETS


# ---- `ipset restore` lines ----------------------------------------------------

def create_line(ipset: IPSet, *, max_list_size: int = DEFAULT_MAX_LIST_SIZE, comments: bool = True) -> str:
    words = ["create", ipset.name, ipset.type.value]
    if ipset.type is IPSetType.LIST_SET and max_list_size > 0:
        words += ["size", str(max_list_size)]
    if comments:
        words.append("comment")
    return " ".join(words)


def add_line(name: str, member: str, comment: str, *, comments: bool = True) -> str:
    line = f"add {name} {member}"
    return f'{line} comment "{comment}"' if comments else line


def del_line(name: str, member: str) -> str:
    return f"del {name} {member}"


def destroy_line(name: str) -> str:
    return f"destroy {name}"


def render_save(ipsets: Mapping[str, IPSet], *, max_list_size: int = DEFAULT_MAX_LIST_SIZE) -> str:
    """A full restore script (create + add) for `ipsets`, in the shape of `ipset save`."""
    lines = []
    for ipset in ipsets.values():
        lines.append(create_line(ipset, max_list_size=max_list_size))
        lines += [add_line(ipset.name, m, c) for m, c in ipset.members.items()]
    return "".join(line + "\n" for line in lines)


# ---- `ipset save` parsing -----------------------------------------------------

def parse_ipset_save(text: str) -> dict[str, IPSet]:
    """Every set in `ipset save` output (all types, all owners), in file order.

    Types weave-npc never creates are kept out; an `add` for an unknown set is an
    error (RemoteProtocolError, code "bad_ipset_save"), as the text is not ipset's.
    """
    types: dict[str, IPSetType | None] = {}
    members: dict[str, dict[str, str]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        words = _split(line, number)
        if not words:
            continue
        if words[0] == "create" and len(words) >= 3:
            types[words[1]] = _set_type(words[2])
            members[words[1]] = {}
        elif words[0] == "add" and len(words) >= 3 and words[1] in members:
            members[words[1]][words[2]] = _option(words[3:], "comment")
        else:
            raise RemoteProtocolError(
                f"unexpected line {number} in ipset save output", code="bad_ipset_save", line=line
            )
    return {
        name: IPSet(name, set_type, members[name], negated=set_type is IPSetType.HASH_NET)
        for name, set_type in types.items()
        if set_type is not None
    }


def _set_type(word: str) -> IPSetType | None:
    try:
        return IPSetType(word)
    except ValueError:
        return None


def _option(words: list[str], name: str) -> str:
    for i, word in enumerate(words[:-1]):
        if word == name:
            return words[i + 1]
    return ""


_WORD = re.compile(r'(?:"[^"]*"|[^\s"])+')


def _split(line: str, number: int) -> list[str]:
    """Whitespace-separated words; "double quoted" words may hold spaces."""
    if line.count('"') % 2 == 0:  # the common case, by regex: a word is quoted and bare runs
        return [word.replace('"', "") for word in _WORD.findall(line)]
    words, current, quoted, started = [], [], False, False
    for char in line.strip():
        if char == '"':
            quoted, started = not quoted, True
        elif char.isspace() and not quoted:
            if started:
                words.append("".join(current))
            current, started = [], False
        else:
            current.append(char)
            started = True
    if quoted:
        raise RemoteProtocolError(
            f"unterminated quote on line {number} of ipset save output", code="bad_ipset_save", line=line
        )
    if started:
        words.append("".join(current))
    return words
