"""The NPC compiler: Namespaces, Pods and NetworkPolicies in, desired NPCState out.

A sans-I/O core (weave:npc/controller.go + namespace.go, reshaped). Events upsert or
delete objects; `desired_state()` returns every WEAVE-NPC* chain and every weave-npc
ipset with its members, deterministically: the same objects give the same state
whatever order they arrived in. (One exception, kept from weave: the default egress
DROP, once installed by an egress policy, stays until the process restarts.)

Rules and the sets they name come only from policies, reference-counted by policy
UID across all policies: a rule or set exists while some accepted policy needs it, so
pod churn and namespace label changes only move ipset members. Per namespace there are
always an all-pods set and two default-allow sets (ingress, egress) holding the pods
that no policy of that type targets; the bypass rules that consult them exist once the
Namespace object itself is known (as in weave, which adds them on AddNamespace).

A rejected policy (see analyser.py) contributes nothing, exactly as weave, which drops
it "from further processing": its target pods stay default-allowed. `rejected` lists
them with the reason, for the shell to log and report.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from . import chains
from .analyser import PolicyAnalysis, PolicyRejected, analyse_policy
from .ipset import IPSet, IPSetType
from .iptables import canonical
from .model import Namespace, NetworkPolicy, Pod
from .rule import PolicyType, RefCount, RuleSpec
from .selector import SelectorSpec, all_pods_spec
from .shortname import ipset_name
from .state import NPCState


@dataclass(frozen=True)
class NPCConfig:
    """weave-npc's flags that shape rules (defaults are weave's)."""

    allow_mcast: bool = True                               # --allow-mcast
    bridge_port_name: str = chains.BRIDGE_PORT_NAME        # --bridge-port-name
    fastpath_port_name: str | None = chains.FASTPATH_PORT_NAME  # ours (chains.FASTPATH_PORT_NAME); None = weave's rules only
    bridge: str = chains.WEAVE_BRIDGE                      # weaver's bridge, for the hooks
    install_hooks: bool = True                             # also own weaver's FORWARD/INPUT hooks


def default_allow_set_name(namespace: str, policy_type: PolicyType) -> str:
    return ipset_name(f"{policy_type.value}-default-allow:{namespace}")


def pod_comment(pod: Pod) -> str:
    return f"namespace: {pod.namespace}, pod: {pod.metadata.name}"


def namespace_comment(namespace: str) -> str:
    return "namespace: " + namespace


class NetworkPolicyController:
    def __init__(self, config: NPCConfig = NPCConfig()) -> None:
        self.config = config
        self._namespaces: dict[str, Namespace] = {}    # by name
        self._pods: dict[str, Pod] = {}                # by uid
        self._policies: dict[str, NetworkPolicy] = {}  # by uid, accepted or not
        self._analyses: dict[str, PolicyAnalysis] = {}  # accepted policies only
        self._rejected: dict[str, PolicyRejected] = {}
        self._rules: RefCount[str] = RefCount()        # rule key -> policy uids
        self._rule_specs: dict[str, RuleSpec] = {}
        self._sets: RefCount[str] = RefCount()         # ipset name -> policy uids
        self._set_specs: dict[str, SelectorSpec] = {}
        self._egress_drop = False
        self._changes = 0                              # bumped by every event
        self._cached: tuple[int, NPCState] | None = None
        self._live: dict[str, list[Pod]] | None = None  # namespace -> live pods, during desired_state

    # ---- events ------------------------------------------------------------

    def add_namespace(self, namespace: Namespace) -> None:
        """Add or update (same thing: state is derived from current objects)."""
        self._changes += 1
        self._namespaces[namespace.name] = namespace

    update_namespace = add_namespace

    def delete_namespace(self, namespace: Namespace) -> None:
        self._changes += 1
        self._namespaces.pop(namespace.name, None)

    def add_pod(self, pod: Pod) -> None:
        self._changes += 1
        self._pods[pod.uid] = pod

    update_pod = add_pod

    def delete_pod(self, pod: Pod) -> None:
        self._changes += 1
        self._pods.pop(pod.uid, None)

    def add_network_policy(self, policy: NetworkPolicy) -> PolicyRejected | None:
        """Add or replace a policy. Returns the rejection, if weave-npc refuses it."""
        self._changes += 1
        if policy.is_egress:
            self._egress_drop = True
        self._withdraw(policy.uid)
        self._policies[policy.uid] = policy
        try:
            analysis = analyse_policy(policy)
            self._check_set_types(policy, analysis)
        except PolicyRejected as rejection:
            self._rejected[policy.uid] = rejection
            return rejection
        self._provision(policy.uid, analysis)
        return None

    update_network_policy = add_network_policy

    def delete_network_policy(self, policy: NetworkPolicy) -> None:
        self._changes += 1
        self._withdraw(policy.uid)
        self._policies.pop(policy.uid, None)

    @property
    def rejected(self) -> Mapping[str, PolicyRejected]:
        """Policy uid -> why it is not enforced."""
        return dict(self._rejected)

    @property
    def rules(self) -> Mapping[str, RuleSpec]:
        """Rule key -> spec, for every rule some accepted policy needs (read-only)."""
        return MappingProxyType(self._rule_specs)

    def rule_users(self, rule_key: str) -> frozenset[str]:
        """Policy uids that need a rule (weave's rule key: args joined by spaces)."""
        return self._rules.users(rule_key)

    # ---- reference counting -----------------------------------------------

    def _provision(self, uid: str, analysis: PolicyAnalysis) -> None:
        self._analyses[uid] = analysis
        self._rule_specs.update(analysis.rules)
        self._rules.provision(uid, analysis.rules)
        for name, spec in analysis.selectors.items():
            self._set_specs.setdefault(name, spec)
        self._sets.provision(uid, [*analysis.selectors, *analysis.ip_blocks])

    def _withdraw(self, uid: str) -> None:
        self._rejected.pop(uid, None)
        analysis = self._analyses.pop(uid, None)
        if analysis is None:
            return
        for key in self._rules.deprovision(uid, analysis.rules):
            del self._rule_specs[key]
        for name in self._sets.deprovision(uid, [*analysis.selectors, *analysis.ip_blocks]):
            self._set_specs.pop(name, None)

    def _check_set_types(self, policy: NetworkPolicy, analysis: PolicyAnalysis) -> None:
        """weave names a namespace+pod selector set and a namespace-only list:set alike
        when the pod selector is empty; two types cannot share a name, so the policy
        that would bring the second type is refused."""
        for name, spec in analysis.selectors.items():
            held = self._set_specs.get(name)
            if held is not None and held.ipset_type is not spec.ipset_type:
                reason = (f"ipset {name} (selector {spec.key!r}) is already a {held.ipset_type.value} set. "
                          f"Rejecting network policy: {policy.name} from further processing.")
                raise PolicyRejected(reason, namespace=policy.namespace, name=policy.name, reason=reason)

    # ---- desired state ------------------------------------------------------

    def desired_state(self) -> NPCState:
        """The whole desired state; computed again only after an event changed something."""
        if self._cached is None or self._cached[0] != self._changes:
            self._live = self._live_by_namespace()
            try:
                self._cached = (self._changes, self._compute_state())
            finally:
                self._live = None
        return self._cached[1]

    def _compute_state(self) -> NPCState:
        chain_args = chains.static_chains(
            allow_mcast=self.config.allow_mcast,
            bridge_port_name=self.config.bridge_port_name,
            fastpath_port_name=self.config.fastpath_port_name,
            egress_drop=self._egress_drop,
        )
        chain_args.update(self._dynamic_chains())
        hooks = chains.hook_rules(self.config.bridge) if self.config.install_hooks else {}
        return NPCState(
            chains={name: tuple(canonical(a) for a in args) for name, args in chain_args.items()},
            ipsets=self._ipsets(),
            hooks={name: tuple(canonical(a) for a in args) for name, args in hooks.items()},
        )

    def _dynamic_chains(self) -> dict[str, list[tuple[str, ...]]]:
        out: dict[str, list[tuple[str, ...]]] = {name: [] for name in chains.DYNAMIC_CHAINS}
        for ns in sorted(self._namespaces):
            bypass = chains.bypass_rules(
                ns, default_allow_set_name(ns, PolicyType.INGRESS), default_allow_set_name(ns, PolicyType.EGRESS)
            )
            for chain, rules in bypass.items():
                out[chain] += rules
        for key in sorted(self._rule_specs):
            spec = self._rule_specs[key]
            out[spec.chain] += spec.iptables_rules()
        return out

    def _known_namespaces(self) -> list[str]:
        names = set(self._namespaces)
        names.update(p.namespace for p in self._pods.values())
        names.update(p.namespace for p in self._policies.values())
        return sorted(names)

    def _ipsets(self) -> dict[str, IPSet]:
        sets: dict[str, IPSet] = {}
        for ns in self._known_namespaces():
            for policy_type in PolicyType:
                name = default_allow_set_name(ns, policy_type)
                sets[name] = IPSet(name, IPSetType.HASH_IP, self._default_allow_members(ns, policy_type))
            spec = all_pods_spec(ns)
            sets[spec.ipset_name] = IPSet(spec.ipset_name, IPSetType.HASH_IP, self._pod_members(spec))
        for name in sorted(self._sets):
            sets[name] = self._policy_set(name)
        return sets

    def _policy_set(self, name: str) -> IPSet:
        spec = self._set_specs.get(name)
        if spec is None:  # an ipBlock except set
            return IPSet(name, IPSetType.HASH_NET, self._except_members(name), negated=True)
        if spec.ipset_type is IPSetType.LIST_SET:
            return IPSet(name, IPSetType.LIST_SET, self._namespace_members(spec))
        return IPSet(name, IPSetType.HASH_IP, self._pod_members(spec))

    def _live_by_namespace(self) -> dict[str, list[Pod]]:
        """Pods that count (weave's hasIP) by namespace, each list in a fixed order: on
        a duplicate IP the first pod's comment wins."""
        live: dict[str, list[Pod]] = {}
        for pod in sorted((p for p in self._pods.values() if p.has_ip),
                          key=lambda p: (p.namespace, p.metadata.name, p.uid)):
            live.setdefault(pod.namespace, []).append(pod)
        return live

    def _live_pods(self, namespaces: Iterable[str]) -> list[Pod]:
        live = self._live if self._live is not None else self._live_by_namespace()
        return [p for ns in sorted(set(namespaces)) for p in live.get(ns, ())]

    def _members(self, pods: Iterable[Pod]) -> dict[str, str]:
        members: dict[str, str] = {}
        for pod in pods:
            members.setdefault(pod.ip, pod_comment(pod))
        return members

    def _pod_members(self, spec: SelectorSpec) -> dict[str, str]:
        """hash:ip members; a selector across namespaces sees only namespaces whose
        Namespace object (and so whose labels) is known."""
        if spec.ns_name:
            scope: Iterable[str] = [spec.ns_name]
            labels_of = {spec.ns_name: {}}
        else:
            scope = self._namespaces
            labels_of = {name: ns.labels for name, ns in self._namespaces.items()}
        return self._members(
            p for p in self._live_pods(scope) if spec.matches_pod(p.metadata.labels, labels_of[p.namespace])
        )

    def _namespace_members(self, spec: SelectorSpec) -> dict[str, str]:
        assert spec.namespace_selector is not None
        return {
            all_pods_spec(name).ipset_name: namespace_comment(name)
            for name, ns in sorted(self._namespaces.items())
            if spec.namespace_selector.matches(ns.labels)
        }

    def _default_allow_members(self, ns: str, policy_type: PolicyType) -> dict[str, str]:
        targets = [
            a.target for uid, a in self._analyses.items()
            if policy_type in a.policy_types and self._policies[uid].namespace == ns
        ]
        return self._members(
            p for p in self._live_pods([ns]) if not any(t.matches_pod(p.metadata.labels, {}) for t in targets)
        )

    def _except_members(self, name: str) -> dict[str, str]:
        """Except CIDRs; when ipBlocks with different CIDRs share the set (weave keys
        it by the except list alone) the comment names the smallest CIDR string."""
        blocks = sorted(
            (b for a in self._analyses.values() for n, b in a.ip_blocks.items() if n == name),
            key=lambda b: b.cidr,
        )
        return {cidr: blocks[0].except_comment for cidr in blocks[0].excepts} if blocks else {}
