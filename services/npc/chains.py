"""weave-npc's filter-table chains: names, static content, and the hook-up rules.

Names are weave's (weave:common/chains/npc.go, npc/constants.go). Rules are written in
weave's own argument order (weave:prog/weave-npc/main.go `createBaseRules`,
npc/controller.go, net/bridge.go `ConfigureIPTables`); iptables.canonical() turns them
into the form `iptables-save` prints.

Packet path (NEW connections; RELATED,ESTABLISHED are accepted first everywhere):
    FORWARD -i weave  -> WEAVE-NPC-EGRESS  (from a local pod)
    INPUT   -i weave  -> WEAVE-NPC-EGRESS  (from a local pod to this host)
    FORWARD -o weave  -> WEAVE-NPC         (to a local pod), then NFLOG + DROP
WEAVE-NPC: bridged to the router (not to a local pod) -> ACCEPT; else
WEAVE-NPC-DEFAULT (dst in a namespace's ingress default-allow set -> ACCEPT), then
WEAVE-NPC-INGRESS (policy rules -> ACCEPT). Falling through means DROP in FORWARD.
WEAVE-NPC-EGRESS: from the router, to this host, multicast -> RETURN; else
WEAVE-NPC-EGRESS-DEFAULT, then (unless marked) WEAVE-NPC-EGRESS-CUSTOM; rules there
jump to WEAVE-NPC-EGRESS-ACCEPT (set mark 0x40000) then RETURN. Once any egress
policy has been seen, unmarked NEW traffic is logged (NFLOG 86) and dropped.
"""
from __future__ import annotations

TABLE_FILTER = "filter"

MAIN = "WEAVE-NPC"
DEFAULT = "WEAVE-NPC-DEFAULT"
INGRESS = "WEAVE-NPC-INGRESS"
EGRESS = "WEAVE-NPC-EGRESS"
EGRESS_DEFAULT = "WEAVE-NPC-EGRESS-DEFAULT"
EGRESS_CUSTOM = "WEAVE-NPC-EGRESS-CUSTOM"
EGRESS_MARK_CHAIN = "WEAVE-NPC-EGRESS-ACCEPT"

EGRESS_MARK = "0x40000/0x40000"
NFLOG_GROUP = "86"
MCAST_CIDR = "224.0.0.0/4"
BRIDGE_PORT_NAME = "vethwe-bridge"
FASTPATH_PORT_NAME = "vxlan-6784"
"""The datapath's kernel VXLAN device (services/datapath/fastpath.py), a port of the
weave bridge of its own. Weave Net's fastpath reaches the bridge through vethwe-bridge
(OVS behind vethwe-datapath), so weave-npc's router rules cover it; ours does not, so
each router rule is repeated for it: frames bridged out to other hosts are not ingress
policed here, and frames from other hosts are not egress policed here (their own host
did both, as for the sleeve). Without these, remote traffic would be policed twice and,
once an egress policy exists, NEW traffic from an address no egress set holds would be
dropped on arrival."""
WEAVE_BRIDGE = "weave"

# Chains whose rule order matters and which are rewritten whole when they differ.
STATIC_CHAINS = (MAIN, EGRESS_MARK_CHAIN, EGRESS)
# Chains holding one rule (or mark/return pair) per policy rule or namespace; the order
# between unrelated rules does not matter, so they are patched rule by rule.
DYNAMIC_CHAINS = (DEFAULT, INGRESS, EGRESS_DEFAULT, EGRESS_CUSTOM)
ALL_CHAINS = STATIC_CHAINS + DYNAMIC_CHAINS

Args = tuple[str, ...]
_RELATED = ("-m", "state", "--state", "RELATED,ESTABLISHED")
_NEW = ("-m", "state", "--state", "NEW")
_UNMARKED = ("-m", "mark", "!", "--mark", EGRESS_MARK)
_KUBE_NOTE = ("-m", "comment", "--comment", "NOTE: this must go before '-j KUBE-FORWARD'")


def _router_ports(bridge_port_name: str, fastpath_port_name: str | None) -> list[str]:
    return [bridge_port_name] + ([fastpath_port_name] if fastpath_port_name else [])


def main_chain(
    *, allow_mcast: bool = True, bridge_port_name: str = BRIDGE_PORT_NAME,
    fastpath_port_name: str | None = FASTPATH_PORT_NAME,
) -> list[Args]:
    rules = [_RELATED + ("-j", "ACCEPT")]
    if allow_mcast:
        rules.append(("-d", MCAST_CIDR, "-j", "ACCEPT"))
    # Not bound for a local pod (bridged out to the router or the fastpath): not ours to police.
    rules += [("-m", "physdev", "--physdev-is-bridged", f"--physdev-out={port}", "-j", "ACCEPT")
              for port in _router_ports(bridge_port_name, fastpath_port_name)]
    rules += [
        _NEW + ("-j", DEFAULT),
        _NEW + ("-j", INGRESS),
    ]
    return rules


def egress_mark_chain() -> list[Args]:
    return [("-j", "MARK", "--set-xmark", EGRESS_MARK)]


def egress_chain(
    *, allow_mcast: bool = True, bridge_port_name: str = BRIDGE_PORT_NAME,
    fastpath_port_name: str | None = FASTPATH_PORT_NAME, egress_drop: bool = False,
) -> list[Args]:
    """`egress_drop`: weave adds the NFLOG+DROP pair lazily, on the first egress policy,
    so clusters without egress policies never drop pod traffic NPC has not seen yet."""
    rules = [_RELATED + ("-j", "ACCEPT")]
    rules += [("-m", "physdev", "--physdev-is-bridged", f"--physdev-in={port}", "-j", "RETURN")
              for port in _router_ports(bridge_port_name, fastpath_port_name)]
    rules += [("-m", "addrtype", "--dst-type", "LOCAL", "-j", "RETURN")]
    if allow_mcast:
        rules.append(("-d", MCAST_CIDR, "-j", "RETURN"))
    rules += [_NEW + ("-j", EGRESS_DEFAULT), _NEW + _UNMARKED + ("-j", EGRESS_CUSTOM)]
    if egress_drop:
        rules += [_NEW + _UNMARKED + ("-j", "NFLOG", "--nflog-group", NFLOG_GROUP), _UNMARKED + ("-j", "DROP")]
    return rules


def static_chains(
    *, allow_mcast: bool = True, bridge_port_name: str = BRIDGE_PORT_NAME,
    fastpath_port_name: str | None = FASTPATH_PORT_NAME, egress_drop: bool = False,
) -> dict[str, list[Args]]:
    ports = {"bridge_port_name": bridge_port_name, "fastpath_port_name": fastpath_port_name}
    return {
        MAIN: main_chain(allow_mcast=allow_mcast, **ports),
        EGRESS_MARK_CHAIN: egress_mark_chain(),
        EGRESS: egress_chain(allow_mcast=allow_mcast, egress_drop=egress_drop, **ports),
    }


def bypass_rules(namespace: str, ingress_set: str, egress_set: str) -> dict[str, list[Args]]:
    """A namespace's default-allow rules (weave's bypassRules, jump before comment)."""
    ingress_note = ("-m", "comment", "--comment", "DefaultAllow ingress isolation for namespace: " + namespace)
    egress_note = ("-m", "comment", "--comment", "DefaultAllow egress isolation for namespace: " + namespace)
    egress_match = ("-m", "set", "--match-set", egress_set, "src")
    return {
        DEFAULT: [("-m", "set", "--match-set", ingress_set, "dst", "-j", "ACCEPT") + ingress_note],
        EGRESS_DEFAULT: [
            egress_match + ("-j", EGRESS_MARK_CHAIN) + egress_note,
            egress_match + ("-j", "RETURN") + egress_note,
        ],
    }


# Hook chains whose rules must sit together at the top (weave's ensureRulesAtTop);
# in the others they are appended when missing (AppendUnique).
HOOKS_AT_TOP = frozenset({"FORWARD"})


def hook_rules(bridge: str = WEAVE_BRIDGE) -> dict[str, list[Args]]:
    """Rules weaver (`--expect-npc`) keeps in builtin chains, in order.

    FORWARD's six must stay together at the top, ahead of Docker's and kube-proxy's;
    INPUT's one just needs to exist. (Weave adds Docker-bridge rules to FORWARD when
    a Docker bridge is configured; weave-npc deployments have none, nor do we.)
    """
    return {
        "FORWARD": [
            ("-i", bridge) + _KUBE_NOTE + ("-j", EGRESS),
            ("-o", bridge) + _KUBE_NOTE + ("-j", MAIN),
            ("-o", bridge) + _NEW + ("-j", "NFLOG", "--nflog-group", NFLOG_GROUP),
            ("-o", bridge, "-j", "DROP"),
            ("-i", bridge, "!", "-o", bridge, "-j", "ACCEPT"),
            ("-o", bridge, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"),
        ],
        "INPUT": [("-i", bridge, "-j", EGRESS)],
    }
