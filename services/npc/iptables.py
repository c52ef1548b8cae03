"""iptables rules as `iptables-save` prints them: canonical form, parsing, rendering.

weave-npc hands iptables its rules in its own argument order (`-p TCP ... --dport 80
-m comment --comment C -j ACCEPT`, `-j ACCEPT -m comment ...`). The kernel keeps the
compiled rule and `iptables-save` prints it back in a fixed shape:
    [!] -s NET [!] -d NET [!] -i IF [!] -o IF -p proto  matches...  -j TARGET [opts]
with addresses masked and suffixed ("/32"), the protocol in lower case, the implicit
`-m tcp` (udp, sctp) where `--dport` first appears, tcp/udp `--dport 0:65535` left out
and `a:a` printed as `a`, physdev options in their save order, and comments quoted by
xtables_save_string. `canonical()` produces exactly that for the vocabulary weave-npc
uses, so desired rules compare equal to parsed `iptables-save` lines, and the text we
feed `iptables-restore` is what a user later reads in `iptables-save`.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from shared.errors import LocalProtocolError, RemoteProtocolError

Rule = tuple[str, ...]

_IP_FLAGS = {
    "-s": "-s", "--source": "-s", "--src": "-s",
    "-d": "-d", "--destination": "-d", "--dst": "-d",
    "-i": "-i", "--in-interface": "-i",
    "-o": "-o", "--out-interface": "-o",
    "-p": "-p", "--protocol": "-p",
}
_IP_ORDER = ("-s", "-d", "-i", "-o", "-p")
_PORTS = {"--sport": 1, "--dport": 1}
_MODULE_OPTIONS: dict[str, dict[str, int]] = {
    "set": {"--match-set": 2},
    "comment": {"--comment": 1},
    "state": {"--state": 1},
    "conntrack": {"--ctstate": 1},
    "mark": {"--mark": 1},
    "addrtype": {"--src-type": 1, "--dst-type": 1},
    "physdev": {"--physdev-in": 1, "--physdev-is-in": 0, "--physdev-out": 1,
                "--physdev-is-out": 0, "--physdev-is-bridged": 0},
    "tcp": _PORTS, "udp": _PORTS, "sctp": _PORTS,
}
_TARGET_OPTIONS = {"--set-xmark": 1, "--nflog-group": 1, "--nflog-prefix": 1}
_STATE_ORDER = ("INVALID", "NEW", "RELATED", "ESTABLISHED", "UNTRACKED")
_NO_QUOTE = frozenset("_-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclass
class _Option:
    invert: bool
    name: str
    values: list[str]


@dataclass
class _Match:
    module: str
    options: list[_Option] = field(default_factory=list)


@dataclass
class _ParsedRule:
    ip: dict[str, tuple[bool, str]] = field(default_factory=dict)
    matches: list[_Match] = field(default_factory=list)
    target: list[str] = field(default_factory=list)


def canonical(args: Sequence[str]) -> Rule:
    """`args` (a rule without `-A CHAIN`) in iptables-save form.

    Raises LocalProtocolError for options outside weave-npc's vocabulary: we only
    canonicalize rules we wrote ourselves.
    """
    parsed = _parse_args(_split_equals(args))
    out: list[str] = []
    for flag in _IP_ORDER:
        if flag in parsed.ip:
            invert, value = parsed.ip[flag]
            out += (["!"] if invert else []) + [flag, value]
    for match in parsed.matches:
        out += ["-m", match.module] + _render_options(match)
    if parsed.target:
        out += ["-j"] + parsed.target
    return tuple(out)


def _split_equals(args: Sequence[str]) -> list[str]:
    tokens: list[str] = []
    for arg in args:
        if arg.startswith("--") and "=" in arg:
            tokens += arg.split("=", 1)
        else:
            tokens.append(arg)
    return tokens


def _parse_args(tokens: list[str]) -> _ParsedRule:
    rule, current, in_target, invert, i = _ParsedRule(), None, False, False, 0
    while i < len(tokens):
        token = tokens[i]
        if token == "!":
            invert, i = True, i + 1
        elif token in _IP_FLAGS:
            flag = _IP_FLAGS[token]
            rule.ip[flag] = (invert, _canonical_ip(flag, _value(tokens, i)))
            invert, i = False, i + 2
        elif token in ("-m", "--match"):
            current, in_target, i = _Match(_value(tokens, i)), False, i + 2
            rule.matches.append(current)
        elif token in ("-j", "--jump"):
            rule.target, in_target, i = [_value(tokens, i)], True, i + 2
        elif in_target and token in _TARGET_OPTIONS:
            arity = _TARGET_OPTIONS[token]
            rule.target += tokens[i:i + 1 + arity]
            i += 1 + arity
        else:
            current = _owner(rule, current, token)
            arity = _MODULE_OPTIONS[current.module][token]
            current.options.append(_Option(invert, token, tokens[i + 1:i + 1 + arity]))
            invert, i = False, i + 1 + arity
    return rule


def _value(tokens: list[str], i: int) -> str:
    if i + 1 >= len(tokens):
        raise LocalProtocolError(f"iptables option {tokens[i]} lacks its value", args=tokens)
    return tokens[i + 1]


def _owner(rule: _ParsedRule, current: _Match | None, option: str) -> _Match:
    """The match an option belongs to; `--dport` after `-p tcp` loads `-m tcp` here."""
    if current is not None and option in _MODULE_OPTIONS.get(current.module, {}):
        return current
    proto = rule.ip.get("-p", (False, ""))[1]
    if option in _PORTS and proto in ("tcp", "udp", "sctp"):
        implicit = _Match(proto)
        rule.matches.append(implicit)
        return implicit
    raise LocalProtocolError(f"iptables option {option} outside weave-npc's vocabulary", option=option)


def _canonical_ip(flag: str, value: str) -> str:
    if flag == "-p":
        return value.lower()
    if flag in ("-s", "-d"):
        return str(ipaddress.ip_network(value, strict=False))
    return value


def _render_options(match: _Match) -> list[str]:
    options = match.options
    if match.module == "physdev":
        order = list(_MODULE_OPTIONS["physdev"])
        options = sorted(options, key=lambda o: order.index(o.name))
    elif match.module in ("tcp", "udp", "sctp"):
        options = sorted(options, key=lambda o: o.name != "--sport")
    out: list[str] = []
    for option in options:
        values = _render_values(match.module, option)
        if values is not None:
            out += (["!"] if option.invert else []) + [option.name] + values
    return out


def _render_values(module: str, option: _Option) -> list[str] | None:
    """Values as saved; None when iptables-save leaves the option out altogether."""
    if option.name in ("--state", "--ctstate"):
        states = set(option.values[0].split(","))
        return [",".join(s for s in _STATE_ORDER if s in states)]
    if option.name in _PORTS:
        low, _, high = option.values[0].partition(":")
        high = high or low
        if module != "sctp" and (low, high) == ("0", "65535") and not option.invert:
            return None
        return [low if low == high else f"{low}:{high}"]
    return list(option.values)


# ---- text: tokens, quoting, save parsing, restore lines ----------------------

def save_string(value: str) -> str:
    """xtables_save_string: bare if only [A-Za-z0-9_-], else double-quoted with
    backslashes before `"`, `\\` and `'`."""
    if value and all(c in _NO_QUOTE for c in value):
        return value
    return '"' + "".join("\\" + c if c in "\"\\'" else c for c in value) + '"'


def render_args(rule: Rule) -> str:
    """Tokens as one restore/save line fragment; comments are quoted like iptables-save."""
    words = []
    for i, token in enumerate(rule):
        plain = token and not any(c.isspace() or c in "\"'\\" for c in token)
        words.append(token if plain and rule[i - 1:i] != ("--comment",) else save_string(token))
    return " ".join(words)


def rule_line(op: str, chain: str, rule: Rule, position: int | None = None) -> str:
    """`-A CHAIN ...`, `-D CHAIN ...` or (with position) `-I CHAIN N ...`."""
    where = f"{chain} {position}" if position is not None else chain
    return f"{op} {where} {render_args(rule)}".rstrip()


def tokenize(line: str) -> list[str]:
    """Split a save/restore line as iptables-restore does: double quotes group words
    and, inside them, a backslash takes the next character literally."""
    if '"' not in line:
        return line.split()
    tokens: list[str] = []
    buf: list[str] = []
    quoted = escaped = started = False
    for char in line:
        if quoted:
            if escaped:
                buf.append(char)
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                tokens.append("".join(buf))
                buf, quoted, started = [], False, False
            else:
                buf.append(char)
        elif char == '"':
            quoted = started = True
        elif char.isspace():
            if started:
                tokens.append("".join(buf))
            buf, started = [], False
        else:
            buf.append(char)
            started = True
    if quoted:
        raise RemoteProtocolError("unterminated quote in iptables-save line", code="bad_iptables_save", line=line)
    if started:
        tokens.append("".join(buf))
    return tokens


def parse_iptables_save(text: str, table: str = "filter") -> dict[str, list[Rule]]:
    """Chains of `table` (builtin and user, declared or used) -> their rules, in order.

    Rules are token tuples without `-A CHAIN` (and without `-c`/`[p:b]` counters).
    Raises RemoteProtocolError (code "bad_iptables_save") on a line that is not save
    output.
    """
    chains: dict[str, list[Rule]] = {}
    in_table = False
    for line in (raw.strip() for raw in text.splitlines()):
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            in_table = line[1:] == table
        elif not in_table:
            continue
        elif line == "COMMIT":
            in_table = False
        elif line.startswith(":"):
            chains.setdefault(line[1:].split()[0], [])
        else:
            chain, rule = _parse_append(line)
            chains.setdefault(chain, []).append(rule)
    return chains


def _parse_append(line: str) -> tuple[str, Rule]:
    tokens = tokenize(line)
    if tokens and tokens[0].startswith("["):
        tokens = tokens[1:]
    if tokens[:1] == ["-c"]:
        tokens = tokens[3:]
    if len(tokens) < 2 or tokens[0] != "-A":
        raise RemoteProtocolError("not an iptables-save rule line", code="bad_iptables_save", line=line)
    return tokens[1], tuple(tokens[2:])


_BUILTIN = frozenset({"INPUT", "FORWARD", "OUTPUT"})


def render_save(chains: Mapping[str, Sequence[Rule]], table: str = "filter") -> str:
    """`chains` as iptables-save would print them (builtin policies shown as ACCEPT)."""
    lines = [f"*{table}"]
    lines += [f":{name} {'ACCEPT' if name in _BUILTIN else '-'} [0:0]" for name in chains]
    lines += [rule_line("-A", name, rule) for name, rules in chains.items() for rule in rules]
    lines.append("COMMIT")
    return "".join(line + "\n" for line in lines)
