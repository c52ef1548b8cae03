"""One NetworkPolicy -> the rules and ipsets it needs (weave:npc/analyser.go).

Per policy, in weave's words:
- the target selector (spec.podSelector) -> a hash:ip set of the policy's namespace;
- ingress rule x peer x port -> a rule spec `[-p P] [SRC] TARGET dst [--dport D]`;
- egress rule x peer x port  -> a rule spec `[-p P] TARGET src [DST] [--dport D]`;
- peers: podSelector -> hash:ip (this namespace), namespaceSelector -> list:set,
  both -> hash:ip across namespaces, ipBlock -> `-s/-d CIDR` [+ negated except set];
- no peers = anywhere; no ports = every port; a port without protocol is TCP; a
  protocol without port is `0:65535`; endPort makes `--dport port:endPort`.
Rules are taken only for the policy types the policy has (Kubernetes semantics; weave
2.8 also took ingress rules of Egress-only policies, which could open isolated pods).

A policy Kubernetes would accept but weave-npc cannot enforce is rejected whole with
PolicyRejected, whose message names the policy: named ports (weave's own message),
unknown protocols, bad CIDRs or IPv6, bad selectors, bad port ranges.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from shared.errors import RemoteProtocolError

from .ipblock import CIDRError, IPBlockSpec, new_ip_block_spec
from .ipset import IPSetType
from .model import EGRESS, INGRESS, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort
from .rule import PolicyType, RuleHost, RuleSpec, new_rule_spec
from .selector import SelectorError, SelectorSpec, new_selector_spec

PROTOCOLS = ("TCP", "UDP", "SCTP")
ALL_PORTS = "0:65535"


class PolicyRejected(RemoteProtocolError):
    """weave-npc will not enforce this policy; it has no effect until fixed."""

    code = "policy_rejected"


@dataclass(frozen=True)
class PolicyAnalysis:
    """What one accepted policy needs. Maps are keyed by rule key / ipset name."""

    target: SelectorSpec
    policy_types: frozenset[PolicyType]
    rules: Mapping[str, RuleSpec]
    selectors: Mapping[str, SelectorSpec]
    ip_blocks: Mapping[str, IPBlockSpec]


class _Analysis:
    """Accumulates one policy's specs; dicts keep first-seen order (determinism)."""

    def __init__(self, policy: NetworkPolicy) -> None:
        self.policy = policy
        self.ns = policy.namespace
        self.target = new_selector_spec(policy.spec.pod_selector, None, self.ns, IPSetType.HASH_IP)
        self.rules: dict[str, RuleSpec] = {}
        self.selectors: dict[str, SelectorSpec] = {self.target.ipset_name: self.target}
        self.ip_blocks: dict[str, IPBlockSpec] = {}

    def add_rules(self, policy_type: PolicyType, peers: Sequence[NetworkPolicyPeer],
                  ports: Sequence[NetworkPolicyPort]) -> None:
        port_specs = _normalised_ports(self.policy, ports)
        for host in [self.peer(p) for p in peers] or [None]:
            src, dst = (host, self.target) if policy_type is PolicyType.INGRESS else (self.target, host)
            for proto, dport in port_specs:
                spec = new_rule_spec(policy_type, proto, src, dst, dport)
                self.rules.setdefault(spec.key, spec)

    def peer(self, peer: NetworkPolicyPeer) -> RuleHost | None:
        """The rule host for one peer, registering the set it needs."""
        if peer.pod_selector is not None and peer.namespace_selector is not None:
            spec = new_selector_spec(peer.pod_selector, peer.namespace_selector, "", IPSetType.HASH_IP)
        elif peer.pod_selector is not None:
            spec = new_selector_spec(peer.pod_selector, None, self.ns, IPSetType.HASH_IP)
        elif peer.namespace_selector is not None:
            spec = new_selector_spec(None, peer.namespace_selector, "", IPSetType.LIST_SET)
        elif peer.ip_block is not None:
            block = new_ip_block_spec(peer.ip_block, self.ns)
            if block.ipset_name is not None:
                self.ip_blocks.setdefault(block.ipset_name, block)
            return block
        else:
            return None  # an empty peer; the API server refuses these
        self.selectors.setdefault(spec.ipset_name, spec)
        return spec


def analyse_policy(policy: NetworkPolicy) -> PolicyAnalysis:
    """Raises PolicyRejected (attrs: namespace, name, reason)."""
    try:
        analysis = _Analysis(policy)
        types = policy.policy_types
        if INGRESS in types:
            for ingress in policy.spec.ingress:
                analysis.add_rules(PolicyType.INGRESS, ingress.from_, ingress.ports)
        if EGRESS in types:
            for egress in policy.spec.egress or ():
                analysis.add_rules(PolicyType.EGRESS, egress.to, egress.ports)
    except (SelectorError, CIDRError) as exc:
        raise _rejection(policy, f"{exc.message}. Rejecting network policy: {policy.name} "
                                 "from further processing.") from exc
    return PolicyAnalysis(
        target=analysis.target,
        policy_types=frozenset(PolicyType(t.lower()) for t in types if t in (INGRESS, EGRESS)),
        rules=analysis.rules,
        selectors=analysis.selectors,
        ip_blocks=analysis.ip_blocks,
    )


def _rejection(policy: NetworkPolicy, reason: str) -> PolicyRejected:
    return PolicyRejected(reason, namespace=policy.namespace, name=policy.name, reason=reason)


def _normalised_ports(policy: NetworkPolicy, ports: Sequence[NetworkPolicyPort]) -> list[tuple[str | None, str | None]]:
    """[(proto, dport)]; [(None, None)] when the rule covers every port and protocol."""
    if not ports:
        return [(None, None)]
    for npp in ports:
        if isinstance(npp.port, str):
            raise _rejection(policy, "named ports in network policies is not supported yet. "
                                     f"Rejecting network policy: {policy.name} from further processing. "
                                     f"named port {npp.port} in network policy")
    return [(_proto(policy, npp), _port(policy, npp)) for npp in ports]


def _proto(policy: NetworkPolicy, npp: NetworkPolicyPort) -> str:
    proto = "TCP" if npp.protocol is None else npp.protocol
    if proto not in PROTOCOLS:
        raise _rejection(policy, f"unsupported protocol {proto!r} (want one of {', '.join(PROTOCOLS)}). "
                                 f"Rejecting network policy: {policy.name} from further processing.")
    return proto


def _port(policy: NetworkPolicy, npp: NetworkPolicyPort) -> str:
    port, end = npp.port, npp.end_port
    problem = None
    if port is None:
        problem = "endPort without port" if end is not None else None
    elif not 1 <= port <= 65535:
        problem = f"port {port} out of range"
    elif end is not None and not port <= end <= 65535:
        problem = f"endPort {end} must be within {port}..65535"
    if problem:
        raise _rejection(policy, f"{problem}. Rejecting network policy: {policy.name} from further processing.")
    if port is None:
        return ALL_PORTS
    return str(port) if end is None or end == port else f"{port}:{end}"
