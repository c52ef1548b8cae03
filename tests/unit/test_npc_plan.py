"""Diffs as restore scripts: exact text for small cases, and a simulator for the rest.

The simulator applies the three scripts to an in-memory filter table and ipset store
with the kernel's constraints (a rule or list:set may only name an existing set; a set
named by a rule or list:set cannot be destroyed; `-D` must match a rule) and checks
the ordering contract: ipset_before only tightens, ipset_after only loosens.
"""
import pytest

from services.npc import chains
from services.npc.iptables import parse_iptables_save, render_save, tokenize
from services.npc.ipset import IPSet, IPSetType, is_ours, normalize_member, parse_ipset_save
from services.npc.plan import plan_update
from services.npc.policy import NPCConfig, NetworkPolicyController
from services.npc.shortname import ipset_name as N
from services.npc.state import NPCState

from .test_npc_policy import ALLOW_INGRESS, TEST_NETWORK_POLICY, cluster, ns, pod, policy

DB = N("default:role=db")
ING_DEFAULT = N("ingress-default-allow:default")


class Netfilter:
    """Just enough kernel: filter-table chains and ipsets, with their constraints."""

    def __init__(self, chains_=None, sets=None):
        self.chains = {"INPUT": [], "FORWARD": [], "OUTPUT": []}
        self.chains.update({k: list(v) for k, v in (chains_ or {}).items()})
        self.sets = {n: {"type": s.type, "members": {normalize_member(s.type, m) for m in s.members}}
                     for n, s in (sets or {}).items()}

    def referenced(self, name):
        in_rules = any(name in rule for rules in self.chains.values() for rule in rules)
        return in_rules or any(name in s["members"] for s in self.sets.values())

    def ipset_restore(self, text, phase):
        for line in text.splitlines():
            op, name, *rest = tokenize(line)
            if op == "create":
                assert phase == "before" and name not in self.sets, line
                self.sets[name] = {"type": IPSetType(rest[0]), "members": set()}
                continue
            s = self.sets[name]
            if op == "destroy":
                assert phase == "after" and not self.referenced(name), line
                del self.sets[name]
                continue
            member = normalize_member(s["type"], rest[0])
            tightens = (op == "del") != (s["type"] is IPSetType.HASH_NET)
            assert tightens == (phase == "before"), f"{line} in {phase}"
            if op == "add":
                assert s["type"] is not IPSetType.LIST_SET or member in self.sets
                s["members"].add(member)
            else:
                s["members"].remove(member)

    def iptables_restore(self, text):
        lines = text.splitlines()
        if not lines:
            return
        assert lines[0] == "*filter" and lines[-1] == "COMMIT"
        staged = {k: list(v) for k, v in self.chains.items()}
        for line in lines[1:-1]:
            if line.startswith(":"):
                staged[line[1:].split()[0]] = []
                continue
            op, chain, *args = tokenize(line)
            position = int(args.pop(0)) if op == "-I" else None
            rule = tuple(args)
            if op == "-D":
                staged[chain].remove(rule)
            else:
                for i, token in enumerate(rule):
                    if token == "--match-set":
                        assert rule[i + 1] in self.sets, line
                jump = rule[rule.index("-j") + 1]
                assert jump.isupper() and (jump in staged or "-" not in jump), line
                staged[chain].insert(position - 1 if position else len(staged[chain]), rule)
        self.chains = staged  # one COMMIT: all at once

    def apply(self, plan):
        self.ipset_restore(plan.ipset_before, "before")
        self.iptables_restore(plan.iptables)
        self.ipset_restore(plan.ipset_after, "after")

    def current_sets(self):
        return {n: IPSet(n, s["type"], {m: "" for m in s["members"]}, negated=s["type"] is IPSetType.HASH_NET)
                for n, s in self.sets.items()}

    def converged_on(self, desired: NPCState):
        for name, rules in desired.chains.items():
            if name in chains.DYNAMIC_CHAINS:  # patched: unrelated rules may move
                assert sorted(self.chains[name]) == sorted(rules), name
                assert _twin_order(self.chains[name]) == _twin_order(rules), name
            else:
                assert self.chains[name] == list(rules), name
        for name, rules in desired.hooks.items():
            assert self.chains[name][:len(rules)] == list(rules)
        ours = {n: s for n, s in self.sets.items() if is_ours(n)}
        assert set(ours) == set(desired.ipsets)
        for name, s in desired.ipsets.items():
            assert ours[name]["members"] == set(s.normalized()), name


def _twin_order(rules):
    return [r for r in rules if r[-1] in ("WEAVE-NPC-EGRESS-ACCEPT", "RETURN")]


def controller(*objects, **config):
    c = NetworkPolicyController(NPCConfig(**config))
    for obj in objects:
        c.add_namespace(obj) if obj.kind == "Namespace" else c.add_pod(obj) if obj.kind == "Pod" \
            else c.add_network_policy(obj)
    return c


def step(kernel, c):
    desired = c.desired_state()
    plan = plan_update(desired, kernel.chains, kernel.current_sets())
    kernel.apply(plan)
    kernel.converged_on(desired)
    assert plan_update(desired, kernel.chains, kernel.current_sets()).empty  # idempotent
    return plan


# ---- exact scripts ----------------------------------------------------------

def test_add_policy_script():
    c = controller(*cluster())
    kernel = Netfilter()
    step(kernel, c)
    c.add_network_policy(policy(ALLOW_INGRESS))
    plan = step(kernel, c)
    allp = N("default:")
    assert plan.ipset_before == (f"del {ING_DEFAULT} 10.32.0.1\n"
                                 f"del {ING_DEFAULT} 10.32.0.2\n")
    assert plan.iptables == (
        "*filter\n"
        f'-A WEAVE-NPC-INGRESS -m set --match-set {allp} dst -m comment --comment '
        '"anywhere -> pods: namespace: default, selector:  (ingress)" -j ACCEPT\n'
        "COMMIT\n")
    assert plan.ipset_after == ""


def test_remove_policy_script():
    deny = policy(TEST_NETWORK_POLICY)
    c = controller(*cluster(), deny)
    kernel = Netfilter()
    step(kernel, c)
    c.delete_network_policy(deny)
    plan = step(kernel, c)
    assert plan.ipset_before == ""
    body = plan.iptables.splitlines()[1:-1]
    assert len(body) == 5 and all(line.startswith("-D WEAVE-NPC-") for line in body)
    assert plan.ipset_after.splitlines() == [
        f'add {ING_DEFAULT} 10.32.0.1 comment "namespace: default, pod: db"',
        f'add {N("egress-default-allow:default")} 10.32.0.1 comment "namespace: default, pod: db"',
        f"destroy {N(':project=myproject')}",   # the list:set first, then as found
        f"destroy {DB}",
        f"destroy {N('default:ipblock-except:172.17.1.0/24')}",
        f"destroy {N('default:role=frontend')}",
    ]


def test_pod_label_change_moves_only_ipset_members():
    c = controller(*cluster(), policy(TEST_NETWORK_POLICY))
    kernel = Netfilter()
    step(kernel, c)
    c.update_pod(pod("fe", "default", "10.32.0.2", role="db"))
    plan = step(kernel, c)
    assert plan.iptables == ""
    assert plan.ipset_before.splitlines() == [
        f"del {ING_DEFAULT} 10.32.0.2",
        f"del {N('egress-default-allow:default')} 10.32.0.2",
        f"del {N('default:role=frontend')} 10.32.0.2",
    ]
    assert plan.ipset_after == f'add {DB} 10.32.0.2 comment "namespace: default, pod: fe"\n'


def test_new_except_set_is_filled_before_rules_use_it():
    c = controller(*cluster())
    kernel = Netfilter()
    step(kernel, c)
    c.add_network_policy(policy(TEST_NETWORK_POLICY))
    plan = step(kernel, c)
    except_set = N("default:ipblock-except:172.17.1.0/24")
    assert f'add {except_set} 172.17.1.0/24 comment "excepted from 172.17.0.0/16"' in plan.ipset_before
    assert f"add {except_set}" not in plan.ipset_after


# ---- drift: what iptables-save / ipset save show ----------------------------

def converged():
    c = controller(*cluster(), policy(TEST_NETWORK_POLICY), ns("z"))
    kernel = Netfilter()
    step(kernel, c)
    return c, kernel


def test_flushed_chain_is_refilled_without_redeclaring():
    c, kernel = converged()
    saved = parse_iptables_save(render_save(kernel.chains))
    saved[chains.INGRESS] = []
    plan = plan_update(c.desired_state(), saved, kernel.current_sets())
    assert not plan.ipset_before and not plan.ipset_after
    body = plan.iptables.splitlines()[1:-1]
    assert len(body) == 3 and all(line.startswith("-A WEAVE-NPC-INGRESS ") for line in body)


def test_missing_chain_is_declared_and_static_chain_drift_rewrites_it():
    c, kernel = converged()
    del kernel.chains[chains.EGRESS_CUSTOM]
    kernel.chains[chains.MAIN] = kernel.chains[chains.MAIN][1:]   # lost its first rule
    plan = step(kernel, c)
    assert plan.iptables.splitlines()[1:3] == [":WEAVE-NPC - [0:0]", ":WEAVE-NPC-EGRESS-CUSTOM - [0:0]"]


def test_foreign_and_duplicate_rules_in_a_dynamic_chain():
    c, kernel = converged()
    stray = ("-s", "1.2.3.4/32", "-j", "ACCEPT")
    kernel.chains[chains.INGRESS] = [stray] + kernel.chains[chains.INGRESS] * 2
    plan = step(kernel, c)
    assert plan.iptables.count("-D WEAVE-NPC-INGRESS") == 4 and "-A WEAVE-NPC-INGRESS" not in plan.iptables


def test_egress_twins_out_of_order_rewrite_the_chain():
    c, kernel = converged()
    kernel.chains[chains.EGRESS_CUSTOM] = kernel.chains[chains.EGRESS_CUSTOM][::-1]
    plan = step(kernel, c)
    assert ":WEAVE-NPC-EGRESS-CUSTOM - [0:0]" in plan.iptables


@pytest.mark.parametrize("keep_order", [True, False])
def test_hooks_stay_at_the_top_of_forward(keep_order):
    c, kernel = converged()
    hooks = list(c.desired_state().hooks["FORWARD"])
    docker = ("-j", "DOCKER-USER")
    kernel.chains["FORWARD"] = [docker, hooks[0], docker] + hooks[1:] if keep_order else [docker] + hooks[1:]
    kernel.chains["DOCKER-USER"] = []
    desired = c.desired_state()
    plan = plan_update(desired, kernel.chains, kernel.current_sets())
    if keep_order:
        assert plan.empty  # others' rules in between are fine (weave: all present)
    else:
        kernel.apply(plan)
        assert kernel.chains["FORWARD"] == hooks + [docker]
        assert plan.iptables.count("-I FORWARD") == 6 and plan.iptables.count("-D FORWARD") == 5


def test_hooks_of_an_unlisted_builtin_chain_are_left_alone():
    c, kernel = converged()
    del kernel.chains["INPUT"]
    kernel.chains["FORWARD"] = []
    plan = plan_update(c.desired_state(), kernel.chains, kernel.current_sets())
    assert "INPUT" not in plan.iptables and plan.iptables.count("-I FORWARD") == 6


def test_stale_and_foreign_sets():
    c, kernel = converged()
    kernel.sets["weave-stale"] = {"type": IPSetType.HASH_IP, "members": {"10.1.1.1"}}
    kernel.sets["weave-no-masq-local"] = {"type": IPSetType.HASH_NET, "members": {"10.32.0.0/12"}}
    kernel.sets["KUBE-thing"] = {"type": IPSetType.HASH_IP, "members": set()}
    plan = step(kernel, c)
    assert plan.ipset_after == "destroy weave-stale\n"
    assert "weave-no-masq-local" in kernel.sets and "KUBE-thing" in kernel.sets


def test_resync_from_save_text_round_trips():
    c, kernel = converged()
    saved_sets = parse_ipset_save("".join(
        f"create {n} {s['type'].value} comment\n" + "".join(f"add {n} {m}\n" for m in sorted(s["members"]))
        for n, s in kernel.sets.items()))
    saved_chains = parse_iptables_save(render_save(kernel.chains))
    assert plan_update(c.desired_state(), saved_chains, saved_sets).empty


# ---- a longer life, every step checked by the simulator ----------------------

def test_life_of_a_cluster():
    c = controller(*cluster())
    kernel = Netfilter()
    step(kernel, c)
    events = [
        lambda: c.add_network_policy(policy(TEST_NETWORK_POLICY)),
        lambda: c.add_network_policy(policy(ALLOW_INGRESS)),
        lambda: c.add_namespace(ns("myproject", project="other")),
        lambda: c.add_pod(pod("fe2", "default", "10.32.0.3", role="frontend")),
        lambda: c.update_network_policy(policy(TEST_NETWORK_POLICY.replace("172.17.1.0/24", "172.17.2.0/24"))),
        lambda: c.add_network_policy(policy(TEST_NETWORK_POLICY, namespace="myproject")),
        lambda: c.delete_namespace(ns("myproject")),
        lambda: c.delete_pod(pod("x", "myproject", "")),
        lambda: c.delete_network_policy(policy(TEST_NETWORK_POLICY, namespace="myproject")),
        lambda: c.delete_network_policy(policy(TEST_NETWORK_POLICY)),
        lambda: c.delete_network_policy(policy(ALLOW_INGRESS)),
    ]
    for event in events:
        event()
        step(kernel, c)
    assert set(kernel.sets) == {ING_DEFAULT, N("egress-default-allow:default"), N("default:")}
