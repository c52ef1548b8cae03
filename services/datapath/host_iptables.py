"""weaver's own iptables rules, which `weave launch` and `weave expose` set in Weave Net
(weave:net/bridge.go ConfigureIPTables, weave:net/expose.go); here the datapath owns them.

- nat: chain WEAVE, jumped to from POSTROUTING. For every exposed address's subnet:
  `-s SUBNET -d 224.0.0.0/4 -j RETURN` and, unless exposed `--without-masquerade`,
  `-s SUBNET ! -d SUBNET -j MASQUERADE`: containers reach the rest of the world through
  the exposing host with its address.
- filter, only when no policy controller runs (`--no-npc`; with npc its FORWARD hooks
  are the ones weaver installs for weave-npc): chain WEAVE-EXPOSE with
  `-d SUBNET -j ACCEPT` per exposed subnet, and at the top of FORWARD, in this order:
  `-i weave -o weave -j ACCEPT`, `-o weave -j WEAVE-EXPOSE`, `-i weave ! -o weave -j
  ACCEPT`, `-o weave -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT` (Weave's
  work-around for hosts whose FORWARD policy is DROP, e.g. with Docker).

The fastpath's source filter (fastpath.py) is here too: ipset SOURCE_SET (hash:ip) of
the underlay IPs of the peers allowed on the fastpath, and at the top of INPUT
`-p udp --dport 6784 -m set ! --match-set weavepy-vxlan-peers src -j DROP`. INPUT, not
raw PREROUTING: bridged frames never pass INPUT, while a raw-table rule put every one
of them through that table (~3 % of the fastpath).

`rules` is pure: the whole desired state for the exposed subnets. `apply` makes it so
with one `iptables-restore --noflush` (which replaces the WEAVE and WEAVE-EXPOSE chains
whole, so hide needs no rule-by-rule delete) plus check-then-insert for the jumps in the
built-in chains, like Weave's AppendUnique / ensureRulesAtTop. `remove` undoes it all
(`weave reset`). The iptables backend (nft or legacy) is the one npc detects. Blocking.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Interface

from shared.netfilter_tools import Backend, detect_backend, run_command

SOURCE_SET = "weavepy-vxlan-peers"
"""Not "weave-...": weave-npc (ours and Weave's) owns every set of that prefix and
destroys those it did not make."""
NAT_CHAIN = "WEAVE"
EXPOSE_CHAIN = "WEAVE-EXPOSE"
MCAST = "224.0.0.0/4"
Rule = tuple[str, ...]


class HostIptablesError(OSError):
    """An iptables tool failed; the message has its complaint."""


@dataclass(frozen=True)
class HostRules:
    nat: tuple[Rule, ...]
    """The WEAVE chain."""
    expose: tuple[Rule, ...] | None
    """The WEAVE-EXPOSE chain; None when npc runs (weaver makes none then)."""
    forward: tuple[Rule, ...] = field(default=())
    """Rules kept together at the top of FORWARD (none when npc runs)."""
    postrouting: Rule = ("-j", NAT_CHAIN)


def subnets(cidrs: Iterable[str]) -> list[str]:
    """The networks of interface addresses ("10.32.0.1/12" -> "10.32.0.0/12"), deduplicated, in order."""
    return list(dict.fromkeys(str(IPv4Interface(c).network) for c in cidrs))


def rules(exposed: Iterable[str], *, unmasqueraded: Iterable[str] = (), npc: bool, bridge: str = "weave") -> HostRules:
    """Desired state for the exposed addresses (`unmasqueraded`: those exposed
    --without-masquerade)."""
    plain = set(subnets(unmasqueraded))
    nat: list[Rule] = []
    accept: list[Rule] = []
    for net in subnets(exposed):
        nat.append(("-s", net, "-d", MCAST, "-j", "RETURN"))
        if net not in plain:
            nat.append(("-s", net, "!", "-d", net, "-j", "MASQUERADE"))
        accept.append(("-d", net, "-j", "ACCEPT"))
    if npc:
        return HostRules(tuple(nat), None)
    forward = (
        ("-i", bridge, "-o", bridge, "-j", "ACCEPT"),
        ("-o", bridge, "-j", EXPOSE_CHAIN),
        ("-i", bridge, "!", "-o", bridge, "-j", "ACCEPT"),
        ("-o", bridge, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"),
    )
    return HostRules(tuple(nat), tuple(accept), forward)


def source_rule(port: int) -> Rule:
    return ("-p", "udp", "--dport", str(port), "-m", "set", "!", "--match-set", SOURCE_SET, "src", "-j", "DROP")


def restore_text(r: HostRules) -> str:
    """`iptables-restore --noflush` input that (re)creates the two chains whole."""
    lines = ["*nat", f":{NAT_CHAIN} - [0:0]", *(f"-A {NAT_CHAIN} {' '.join(x)}" for x in r.nat), "COMMIT"]
    if r.expose is not None:
        lines += ["*filter", f":{EXPOSE_CHAIN} - [0:0]", *(f"-A {EXPOSE_CHAIN} {' '.join(x)}" for x in r.expose),
                  "COMMIT"]
    return "\n".join(lines) + "\n"


class HostIptables:
    """Applies HostRules in the calling thread's network namespace."""

    def __init__(self, backend: Backend | None = None, run=run_command) -> None:
        self.run = run
        self.backend = backend or detect_backend(run)

    def _tool(self, verb: str = "") -> str:
        return f"iptables-{self.backend.value}" + (f"-{verb}" if verb else "")

    def _ok(self, argv: list[str], stdin: str | None = None):
        out = self.run(argv, stdin)
        if out.returncode != 0:
            raise HostIptablesError(f"{' '.join(argv[:4])}: {out.stderr.strip()[:300]}")
        return out

    def _exists(self, table: str, chain: str, rule: Rule) -> bool:
        return self.run([self._tool(), "-w", "5", "-t", table, "-C", chain, *rule], None).returncode == 0

    def apply(self, r: HostRules) -> None:
        self._ok([self._tool("restore"), "--noflush", "-w", "5"], restore_text(r))
        if not self._exists("nat", "POSTROUTING", r.postrouting):
            self._ok([self._tool(), "-w", "5", "-t", "nat", "-A", "POSTROUTING", *r.postrouting])
        self._at_top("FORWARD", r.forward)

    def _at_top(self, chain: str, rules_: tuple[Rule, ...]) -> None:
        """weave's ensureRulesAtTop (filter table): if one is missing, all of them are
        deleted and inserted again at the top, in order."""
        if rules_ and not all(self._exists("filter", chain, x) for x in rules_):
            for x in rules_:
                self.run([self._tool(), "-w", "5", "-t", "filter", "-D", chain, *x], None)
            for pos, x in enumerate(rules_, 1):
                self._ok([self._tool(), "-w", "5", "-t", "filter", "-I", chain, str(pos), *x])

    # -- the fastpath's source filter (module docstring) --------------------------------
    def ensure_source_filter(self, port: int) -> None:
        """The set (kept, with its members, if it exists) and the rule."""
        self._ok(["ipset", "create", SOURCE_SET, "hash:ip", "-exist"])
        self._at_top("INPUT", (source_rule(port),))

    def allow_source(self, ip: str, present: bool) -> None:
        self.run(["ipset", "add" if present else "del", SOURCE_SET, ip, "-exist"], None)

    def prune_sources(self, keep: set[str]) -> int:
        """Drop members not in `keep`; returns how many."""
        saved = self.run(["ipset", "list", SOURCE_SET, "-output", "save"], None).stdout
        gone = {line.split()[2] for line in saved.splitlines() if line.startswith("add ")} - keep
        for ip in gone:
            self.allow_source(ip, False)
        return len(gone)

    def remove_source_filter(self, port: int) -> None:
        """The rule, then the set; either may be absent."""
        while self.run([self._tool(), "-w", "5", "-D", "INPUT", *source_rule(port)], None).returncode == 0:
            pass
        self.run(["ipset", "destroy", SOURCE_SET], None)

    def remove(self, bridge: str = "weave") -> None:
        """Every rule and chain `apply` may have made (either npc mode); absent ones are fine."""
        t = self._tool()
        for x in rules((), npc=False, bridge=bridge).forward:
            self.run([t, "-w", "5", "-t", "filter", "-D", "FORWARD", *x], None)
        self.run([t, "-w", "5", "-t", "nat", "-D", "POSTROUTING", "-j", NAT_CHAIN], None)
        for table, chain in (("nat", NAT_CHAIN), ("filter", EXPOSE_CHAIN)):
            self.run([t, "-w", "5", "-t", table, "-F", chain], None)
            self.run([t, "-w", "5", "-t", table, "-X", chain], None)
