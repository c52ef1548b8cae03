"""The compiler: objects in, chains and ipsets out. Expected rules are iptables-save lines."""
import itertools

import pytest
import yaml

from services.npc import chains
from services.npc.iptables import render_args
from services.npc.model import Namespace, NetworkPolicy, Pod
from services.npc.policy import NPCConfig, NetworkPolicyController
from services.npc.shortname import ipset_name as N

ING_DEFAULT = N("ingress-default-allow:default")
EG_DEFAULT = N("egress-default-allow:default")
ALL_DEFAULT = N("default:")
DB = N("default:role=db")
FRONTEND = N("default:role=frontend")
MYPROJECT_NS = N(":project=myproject")
EXCEPT_172 = N("default:ipblock-except:172.17.1.0/24")


def ns(name, **labels):
    return Namespace.model_validate({"metadata": {"name": name, "uid": "ns-" + name, "labels": labels}})


def pod(name, namespace, ip, phase="Running", host_network=False, **labels):
    return Pod.model_validate({
        "metadata": {"name": name, "namespace": namespace, "uid": f"{namespace}/{name}", "labels": labels},
        "spec": {"hostNetwork": host_network}, "status": {"podIP": ip, "phase": phase},
    })


def policy(text, namespace="default"):
    raw = yaml.safe_load(text)
    raw.setdefault("metadata", {}).setdefault("namespace", namespace)
    return NetworkPolicy.model_validate(raw)


def cluster():
    return [ns("default"), ns("myproject", project="myproject"),
            pod("db", "default", "10.32.0.1", role="db"), pod("fe", "default", "10.32.0.2", role="frontend"),
            pod("x", "myproject", "10.32.1.1", role="frontend")]


def compile_(*objects, config=NPCConfig()):
    c = NetworkPolicyController(config)
    for obj in objects:
        {Namespace: c.add_namespace, Pod: c.add_pod, NetworkPolicy: c.add_network_policy}[type(obj)](obj)
    return c, c.desired_state()


def lines(state, chain):
    return [render_args(rule) for rule in state.chains[chain]]


def members(state, name):
    return dict(state.ipsets[name].members)


def egress_pair(args):
    return [f"{args} -j WEAVE-NPC-EGRESS-ACCEPT", f"{args} -j RETURN"]


# ---- no policy --------------------------------------------------------------

def test_without_policies_every_pod_is_default_allowed():
    _, state = compile_(*cluster())
    assert lines(state, chains.DEFAULT) == [
        f'-m set --match-set {ING_DEFAULT} dst -m comment --comment "DefaultAllow ingress isolation for namespace: default" -j ACCEPT',
        f'-m set --match-set {N("ingress-default-allow:myproject")} dst -m comment --comment '
        '"DefaultAllow ingress isolation for namespace: myproject" -j ACCEPT',
    ]
    assert lines(state, chains.EGRESS_DEFAULT)[:2] == egress_pair(
        f'-m set --match-set {EG_DEFAULT} src -m comment --comment "DefaultAllow egress isolation for namespace: default"')
    assert lines(state, chains.INGRESS) == lines(state, chains.EGRESS_CUSTOM) == []
    both = {"10.32.0.1": "namespace: default, pod: db", "10.32.0.2": "namespace: default, pod: fe"}
    assert members(state, ING_DEFAULT) == members(state, EG_DEFAULT) == members(state, ALL_DEFAULT) == both
    assert set(state.ipsets) == {ING_DEFAULT, EG_DEFAULT, ALL_DEFAULT, N("ingress-default-allow:myproject"),
                                 N("egress-default-allow:myproject"), N("myproject:")}
    assert "DROP" not in " ".join(lines(state, chains.EGRESS))


def test_static_chains_and_hooks():
    _, state = compile_(config=NPCConfig(allow_mcast=False, bridge_port_name="vethwe-x", fastpath_port_name=None))
    assert lines(state, chains.MAIN) == [  # weave-npc's own chain
        "-m state --state RELATED,ESTABLISHED -j ACCEPT",
        "-m physdev --physdev-out vethwe-x --physdev-is-bridged -j ACCEPT",
        "-m state --state NEW -j WEAVE-NPC-DEFAULT",
        "-m state --state NEW -j WEAVE-NPC-INGRESS",
    ]
    assert lines(state, chains.EGRESS_MARK_CHAIN) == ["-j MARK --set-xmark 0x40000/0x40000"]
    assert [render_args(r) for r in state.hooks["INPUT"]] == ["-i weave -j WEAVE-NPC-EGRESS"]
    assert len(state.hooks["FORWARD"]) == 6
    _, no_hooks = compile_(config=NPCConfig(install_hooks=False))
    assert dict(no_hooks.hooks) == {}


def test_fastpath_port_is_a_router_port():
    """Frames bridged to or from the fastpath's VXLAN port are other hosts' traffic:
    neither ingress policed on the way out nor egress policed on the way in."""
    _, state = compile_()
    assert lines(state, chains.MAIN)[2:4] == [
        "-m physdev --physdev-out vethwe-bridge --physdev-is-bridged -j ACCEPT",
        "-m physdev --physdev-out vxlan-6784 --physdev-is-bridged -j ACCEPT",
    ]
    assert lines(state, chains.EGRESS)[1:3] == [
        "-m physdev --physdev-in vethwe-bridge --physdev-is-bridged -j RETURN",
        "-m physdev --physdev-in vxlan-6784 --physdev-is-bridged -j RETURN",
    ]


# ---- Kubernetes documentation examples -------------------------------------

DENY_INGRESS = "metadata: {name: default-deny-ingress}\nspec: {podSelector: {}, policyTypes: [Ingress]}"
ALLOW_INGRESS = "metadata: {name: allow-all-ingress}\nspec: {podSelector: {}, ingress: [{}], policyTypes: [Ingress]}"
DENY_EGRESS = "metadata: {name: default-deny-egress}\nspec: {podSelector: {}, policyTypes: [Egress]}"
ALLOW_EGRESS = "metadata: {name: allow-all-egress}\nspec: {podSelector: {}, egress: [{}], policyTypes: [Egress]}"
DENY_ALL = "metadata: {name: default-deny-all}\nspec: {podSelector: {}, policyTypes: [Ingress, Egress]}"
NS_ISOLATION = "metadata: {name: deny-from-other-namespaces}\nspec: {podSelector: {}, ingress: [{from: [{podSelector: {}}]}]}"
BOTH = {"10.32.0.1": "namespace: default, pod: db", "10.32.0.2": "namespace: default, pod: fe"}
ANY_TO_ALL = f"-m set --match-set {ALL_DEFAULT} dst -m comment --comment \"anywhere -> pods: namespace: default, selector:  (ingress)\" -j ACCEPT"


@pytest.mark.parametrize(
    "text,ingress,egress_custom,ingress_allowed,egress_allowed,drop",
    [
        (DENY_INGRESS, [], [], {}, BOTH, False),
        (ALLOW_INGRESS, [ANY_TO_ALL], [], {}, BOTH, False),
        (DENY_EGRESS, [], [], BOTH, {}, True),
        (ALLOW_EGRESS, [], egress_pair(
            f'-m set --match-set {ALL_DEFAULT} src -m comment --comment "pods: namespace: default, selector:  -> anywhere (egress)"'),
         BOTH, {}, True),
        (DENY_ALL, [], [], {}, {}, True),
        (NS_ISOLATION, [
            f'-m set --match-set {ALL_DEFAULT} src -m set --match-set {ALL_DEFAULT} dst -m comment --comment '
            '"pods: namespace: default, selector:  -> pods: namespace: default, selector:  (ingress)" -j ACCEPT'],
         [], {}, BOTH, False),
    ],
    ids=["deny-ingress", "allow-ingress", "deny-egress", "allow-egress", "deny-all", "namespace-isolation"],
)
def test_documentation_defaults(text, ingress, egress_custom, ingress_allowed, egress_allowed, drop):
    _, state = compile_(*cluster(), policy(text))
    assert lines(state, chains.INGRESS) == ingress
    assert lines(state, chains.EGRESS_CUSTOM) == egress_custom
    assert members(state, ING_DEFAULT) == ingress_allowed
    assert members(state, EG_DEFAULT) == egress_allowed
    assert members(state, N("ingress-default-allow:myproject")) == {"10.32.1.1": "namespace: myproject, pod: x"}
    assert ("-m mark ! --mark 0x40000/0x40000 -j DROP" in lines(state, chains.EGRESS)) is drop


TEST_NETWORK_POLICY = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: test-network-policy, namespace: default}
spec:
  podSelector: {matchLabels: {role: db}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - ipBlock: {cidr: 172.17.0.0/16, except: [172.17.1.0/24]}
    - namespaceSelector: {matchLabels: {project: myproject}}
    - podSelector: {matchLabels: {role: frontend}}
    ports: [{protocol: TCP, port: 6379}]
  egress:
  - to: [{ipBlock: {cidr: 10.0.0.0/24}}]
    ports: [{protocol: TCP, port: 5978}]
"""


def test_documentation_test_network_policy():
    _, state = compile_(*cluster(), policy(TEST_NETWORK_POLICY))
    db = "pods: namespace: default, selector: role=db"
    assert sorted(lines(state, chains.INGRESS)) == sorted([
        f'-s 172.17.0.0/16 -p tcp -m set ! --match-set {EXCEPT_172} src -m set --match-set {DB} dst -m tcp --dport 6379 '
        f'-m comment --comment "cidr: 172.17.0.0/16 except [172.17.1.0/24] -> {db} (ingress)" -j ACCEPT',
        f'-p tcp -m set --match-set {MYPROJECT_NS} src -m set --match-set {DB} dst -m tcp --dport 6379 '
        f'-m comment --comment "namespaces: selector: project=myproject -> {db} (ingress)" -j ACCEPT',
        f'-p tcp -m set --match-set {FRONTEND} src -m set --match-set {DB} dst -m tcp --dport 6379 '
        f'-m comment --comment "pods: namespace: default, selector: role=frontend -> {db} (ingress)" -j ACCEPT',
    ])
    assert lines(state, chains.EGRESS_CUSTOM) == egress_pair(
        f'-d 10.0.0.0/24 -p tcp -m set --match-set {DB} src -m tcp --dport 5978 '
        f'-m comment --comment "{db} -> cidr: 10.0.0.0/24 (egress)"')
    assert members(state, DB) == {"10.32.0.1": "namespace: default, pod: db"}
    assert members(state, FRONTEND) == {"10.32.0.2": "namespace: default, pod: fe"}  # not myproject's x
    assert members(state, MYPROJECT_NS) == {N("myproject:"): "namespace: myproject"}
    assert state.ipsets[MYPROJECT_NS].type.value == "list:set"
    assert members(state, EXCEPT_172) == {"172.17.1.0/24": "excepted from 172.17.0.0/16"}
    assert state.ipsets[EXCEPT_172].negated
    assert members(state, ING_DEFAULT) == members(state, EG_DEFAULT) == {"10.32.0.2": "namespace: default, pod: fe"}


def test_documentation_port_range_with_end_port():
    _, state = compile_(*cluster(), policy("""
metadata: {name: multi-port-egress}
spec:
  podSelector: {matchLabels: {role: db}}
  policyTypes: [Egress]
  egress: [{to: [{ipBlock: {cidr: 10.0.0.0/24}}], ports: [{protocol: TCP, port: 32000, endPort: 32768}]}]
"""))
    assert lines(state, chains.EGRESS_CUSTOM) == egress_pair(
        f'-d 10.0.0.0/24 -p tcp -m set --match-set {DB} src -m tcp --dport 32000:32768 -m comment --comment '
        '"pods: namespace: default, selector: role=db -> cidr: 10.0.0.0/24 (egress)"')


def test_weave_test_ipblock_rules_keep_weaves_args():
    """weave:npc/controller_test.go TestIngressPolicyWithIPBlockAndPortSpecified and
    TestEgressPolicyWithIPBlock check these substrings of the rule key."""
    c, _ = compile_(ns("default"), policy("""
metadata: {name: allow-ipblock-to-bar}
spec:
  podSelector: {matchLabels: {run: bar}}
  policyTypes: [Ingress, Egress]
  ingress: [{ports: [{protocol: TCP, port: 80}], from: [{ipBlock: {cidr: 192.168.48.4/32}}]}]
  egress: [{to: [{ipBlock: {cidr: 192.168.48.0/24, except: [192.168.48.2/32, 192.168.48.1/32]}}]}]
"""))
    keys = list(c.rules)
    assert any("-s 192.168.48.4/32 -m set --match-set weave-bZ~x=yBgzH)Ht()K*Uv3z{M]Y dst --dport 80" in k for k in keys)
    assert any("-d 192.168.48.0/24 -m set ! --match-set weave-j:W$5om!$8JS})buYAD7q^#sX dst" in k for k in keys)


# ---- features ---------------------------------------------------------------

def test_ports_default_protocol_and_port_and_cross_product():
    _, state = compile_(*cluster(), policy("""
metadata: {name: p}
spec:
  podSelector: {matchLabels: {role: db}}
  ingress:
  - from: [{podSelector: {matchLabels: {role: frontend}}}, {ipBlock: {cidr: 10.9.0.0/16}}]
    ports: [{port: 5432}, {protocol: UDP}, {protocol: SCTP, port: 7}]
"""))
    got = lines(state, chains.INGRESS)
    assert len(got) == 6
    src = f"-m set --match-set {FRONTEND} src -m set --match-set {DB} dst"
    assert f"-p tcp {src} -m tcp --dport 5432 -m comment" in " | ".join(got)
    assert f"-p udp {src} -m udp -m comment" in " | ".join(got)           # --dport 0:65535
    assert f"-s 10.9.0.0/16 -p sctp -m set --match-set {DB} dst -m sctp --dport 7 -m comment" in " | ".join(got)


def test_namespace_and_pod_selector_combined():
    c, state = compile_(*cluster(), ns("other", project="myproject"), pod("y", "other", "10.32.2.1", role="db"),
                        policy("""
metadata: {name: p}
spec:
  podSelector: {}
  ingress: [{from: [{namespaceSelector: {matchLabels: {project: myproject}}, podSelector: {matchLabels: {role: frontend}}}]}]
"""))
    combined = N(":project=myprojectrole=frontend")
    assert members(state, combined) == {"10.32.1.1": "namespace: myproject, pod: x"}
    assert lines(state, chains.INGRESS) == [
        f'-m set --match-set {combined} src -m set --match-set {ALL_DEFAULT} dst -m comment --comment '
        '"namespaces: selector: project=myprojectrole=frontend -> pods: namespace: default, selector:  (ingress)" -j ACCEPT']
    c.add_namespace(ns("myproject", project="elsewhere"))  # namespace label change: members only
    assert members(c.desired_state(), combined) == {}


def test_ingress_rules_of_an_egress_only_policy_are_ignored():
    _, state = compile_(*cluster(), policy(
        "metadata: {name: p}\nspec: {podSelector: {}, policyTypes: [Egress], ingress: [{}], egress: [{}]}"))
    assert lines(state, chains.INGRESS) == []
    assert len(lines(state, chains.EGRESS_CUSTOM)) == 2
    assert members(state, ING_DEFAULT) == BOTH


@pytest.mark.parametrize(
    "pod_,counted",
    [
        (pod("a", "default", "10.32.0.9"), True),
        (pod("a", "default", "10.32.0.9", phase="Succeeded"), False),
        (pod("a", "default", "10.32.0.9", phase="Failed"), False),
        (pod("a", "default", ""), False),
        (pod("a", "default", "10.32.0.9", host_network=True), False),
    ],
)
def test_only_live_addressed_pod_network_pods_count(pod_, counted):
    _, state = compile_(ns("default"), pod_, policy(ALLOW_INGRESS))
    assert ("10.32.0.9" in members(state, ALL_DEFAULT)) is counted
    assert ("10.32.0.9" in members(state, EG_DEFAULT)) is counted


def test_duplicate_ip_survives_deleting_one_owner():
    """weave TestOutOfOrderPodEvents: a new pod reuses an IP before the old one is deleted."""
    old, new = pod("foo", "default", "10.32.0.10", run="foo"), pod("bar", "default", "10.32.0.10", run="bar")
    c, _ = compile_(ns("default"), old, new)
    c.delete_pod(old)
    c.delete_pod(old)
    assert members(c.desired_state(), ING_DEFAULT) == {"10.32.0.10": "namespace: default, pod: bar"}
    c.delete_pod(new)
    assert members(c.desired_state(), ING_DEFAULT) == {}


# ---- rejection --------------------------------------------------------------

@pytest.mark.parametrize(
    "ports_or_peer,reason",
    [
        ("ports: [{port: http}]",
         "named ports in network policies is not supported yet. Rejecting network policy: bad from further "
         "processing. named port http in network policy"),
        ("ports: [{protocol: ICMP, port: 1}]", "unsupported protocol 'ICMP'"),
        ("ports: [{port: 90, endPort: 80}]", "endPort 80 must be within 90..65535"),
        ("ports: [{port: 70000}]", "port 70000 out of range"),
        ("from: [{ipBlock: {cidr: 10.0.0.300/8}}]", "invalid CIDR '10.0.0.300/8'"),
        ("from: [{ipBlock: {cidr: 10.0.0.0}}]", "invalid CIDR '10.0.0.0': no prefix length"),
        ("from: [{ipBlock: {cidr: 'fd00::/8'}}]", "weave-npc handles IPv4 only"),
        ("from: [{ipBlock: {cidr: 10.0.0.0/8, except: [nonsense]}}]", "invalid CIDR 'nonsense'"),
        ("from: [{podSelector: {matchExpressions: [{key: a, operator: Equals, values: [b]}]}}]",
         "'Equals' is not a valid pod selector operator"),
    ],
)
def test_rejected_policy_is_named_and_others_unaffected(ports_or_peer, reason):
    good = policy(ALLOW_INGRESS)
    bad = policy(f"metadata: {{name: bad}}\nspec: {{podSelector: {{matchLabels: {{role: db}}}}, ingress: [{{{ports_or_peer}}}]}}")
    c = NetworkPolicyController()
    for obj in cluster():
        c.add_namespace(obj) if isinstance(obj, Namespace) else c.add_pod(obj)
    assert c.add_network_policy(good) is None
    rejection = c.add_network_policy(bad)
    assert rejection is not None and reason in rejection.message
    assert "Rejecting network policy: bad from further processing" in rejection.message
    assert (rejection.attrs["namespace"], rejection.attrs["name"]) == ("default", "bad")
    assert c.rejected == {"default/bad": rejection}
    state = c.desired_state()
    assert lines(state, chains.INGRESS) == [ANY_TO_ALL]  # only the good policy's rule
    assert DB not in state.ipsets
    c.add_network_policy(policy(DENY_INGRESS.replace("default-deny-ingress", "bad")))  # fixed
    assert c.rejected == {}


def test_rejected_policy_leaves_its_targets_default_allowed():
    _, state = compile_(*cluster(), policy(
        "metadata: {name: p}\nspec: {podSelector: {matchLabels: {role: db}}, ingress: [{ports: [{port: web}]}]}"))
    assert members(state, ING_DEFAULT) == BOTH


def test_set_type_clash_is_rejected():
    """{namespaceSelector: X} and {namespaceSelector: X, podSelector: {}} get one name."""
    c, _ = compile_(*cluster(), policy(
        "metadata: {name: a}\nspec: {podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {k: v}}}]}]}"))
    rejection = c.add_network_policy(policy(
        "metadata: {name: b}\nspec: {podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {k: v}}, podSelector: {}}]}]}"))
    assert rejection is not None and "already a list:set set" in rejection.message


# ---- reference counting, churn, determinism ---------------------------------

def test_rules_and_sets_are_reference_counted_across_policies():
    one, two = policy(ALLOW_INGRESS.replace("allow-all-ingress", "one")), policy(ALLOW_INGRESS.replace("allow-all-ingress", "two"))
    c, state = compile_(*cluster(), one, two)
    (key,) = c.rules
    assert c.rule_users(key) == {"default/one", "default/two"}
    assert lines(state, chains.INGRESS) == [ANY_TO_ALL]
    c.delete_network_policy(one)
    assert lines(c.desired_state(), chains.INGRESS) == [ANY_TO_ALL]
    c.delete_network_policy(two)
    assert lines(c.desired_state(), chains.INGRESS) == []
    assert c.rule_users(key) == frozenset()


def test_shared_namespace_selector_set_lives_while_used():
    text = "metadata: {name: p}\nspec: {podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {project: myproject}}}]}]}"
    a, b = policy(text, "default"), policy(text, "myproject")
    c, state = compile_(*cluster(), a, b)
    assert members(state, MYPROJECT_NS) == {N("myproject:"): "namespace: myproject"}
    c.delete_network_policy(a)
    assert MYPROJECT_NS in c.desired_state().ipsets
    c.delete_network_policy(b)
    assert MYPROJECT_NS not in c.desired_state().ipsets


def test_policy_update_replaces_its_rules():
    c, _ = compile_(*cluster(), policy(TEST_NETWORK_POLICY))
    c.update_network_policy(policy(TEST_NETWORK_POLICY.replace("6379", "6380")))
    got = " ".join(lines(c.desired_state(), chains.INGRESS))
    assert "--dport 6380" in got and "--dport 6379" not in got


def test_pod_churn_changes_only_ipset_members():
    c, before = compile_(*cluster(), policy(TEST_NETWORK_POLICY))
    c.update_pod(pod("fe", "default", "10.32.0.2", role="db"))
    c.add_pod(pod("new", "default", "10.32.0.7", role="frontend"))
    c.delete_pod(pod("x", "myproject", "10.32.1.1"))
    after = c.desired_state()
    assert after.chains == before.chains
    assert set(after.ipsets) == set(before.ipsets)
    assert members(after, DB) == {"10.32.0.1": "namespace: default, pod: db", "10.32.0.2": "namespace: default, pod: fe"}
    assert members(after, FRONTEND) == {"10.32.0.7": "namespace: default, pod: new"}
    assert members(after, ING_DEFAULT) == {"10.32.0.7": "namespace: default, pod: new"}


def test_egress_drop_stays_once_installed_as_in_weave():
    deny = policy(DENY_EGRESS)
    c, state = compile_(*cluster(), deny)
    assert "-m mark ! --mark 0x40000/0x40000 -j DROP" in lines(state, chains.EGRESS)
    c.delete_network_policy(deny)
    assert "-m mark ! --mark 0x40000/0x40000 -j DROP" in lines(c.desired_state(), chains.EGRESS)


def test_bypass_rules_wait_for_the_namespace_object():
    _, state = compile_(pod("a", "late", "10.32.3.1"))
    assert lines(state, chains.DEFAULT) == []
    assert members(state, N("ingress-default-allow:late")) == {"10.32.3.1": "namespace: late, pod: a"}


def test_same_objects_same_state_whatever_the_order():
    objects = [ns("default"), ns("myproject", project="myproject"), pod("db", "default", "10.32.0.1", role="db"),
               pod("x", "myproject", "10.32.1.1", role="frontend"), policy(TEST_NETWORK_POLICY)]
    states = {repr(compile_(*order)[1]) for order in itertools.permutations(objects)}
    assert len(states) == 1
