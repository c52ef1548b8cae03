"""Store entries as Kubernetes objects, and the World keeping a controller in step:
implied namespaces, label changes touching one pod, several addresses, bad values."""
from __future__ import annotations

import pytest

from services.npc.policy import NetworkPolicyController, default_allow_set_name
from services.npc.rule import PolicyType
from services.npc.selector import all_pods_spec
from services.npc.shortname import ipset_name
from services.npc.sources import StoreEntry, namespace_key, pod_key, policy_key
from services.npc.world import NAME_LABEL, World, objects_of
from shared.errors import RemoteProtocolError

A = "aa:00:00:00:00:01"
WEB = {"kind": "NetworkPolicy", "metadata": {"name": "ignored", "namespace": "ignored"},
       "spec": {"podSelector": {"matchLabels": {"app": "web"}},
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "a"}}}]}]}}


def pod(cid, ip, labels=None, namespace="default", peer=A):
    return StoreEntry(pod_key(peer, cid), 1, peer, {"cidrs": [f"{ip}/12"] if ip else [], "labels": labels or {},
                                              "namespace": namespace})


def feed(world, *entries):
    rejected = []
    for e in entries:
        rejected += world.put(e.key, objects_of(e))
    return rejected


def members(controller, name):
    return set(controller.desired_state().ipsets[name].members)


def test_objects_of_each_kind():
    [policy] = objects_of(StoreEntry(policy_key("default", "web"), 3, A, WEB))
    assert (policy.namespace, policy.name, policy.uid) == ("default", "web", "NetworkPolicy/default/web")
    [ns] = objects_of(StoreEntry(namespace_key("other"), 1, A, {"kind": "Namespace", "metadata": {"labels": {"t": "a"}}}))
    assert (ns.name, ns.labels) == ("other", {"t": "a"})
    pods = objects_of(StoreEntry(pod_key(A, "c1"), 1, A, {"cidrs": ["10.32.0.1/12", "10.40.0.1/16"],
                                                      "labels": {"app": "web"}, "namespace": "prod"}))
    assert [(p.ip, p.namespace, p.metadata.name, p.uid) for p in pods] == [
        ("10.32.0.1", "prod", "c1", f"Pod/{A}/c1#0"), ("10.40.0.1", "prod", "c1", f"Pod/{A}/c1#1")]
    assert objects_of(StoreEntry(policy_key("default", "web"), 4, A, None)) == []


@pytest.mark.parametrize("key, value", [
    (policy_key("default", "x"), {"spec": {"podSelector": "everything"}}),
    (namespace_key("x"), {"metadata": {"labels": {"a": 1}}}),
    (pod_key(A, "c1"), {"cidrs": "10.32.0.1/12"}),
    (pod_key(A, "c1"), {"cidrs": [], "labels": {"a": ["b"]}}),
    (pod_key(A, "c1"), {"cidrs": [], "namespace": 7}),
])
def test_values_that_do_not_fit_their_kind(key, value):
    with pytest.raises(RemoteProtocolError):
        objects_of(StoreEntry(key, 1, A, value))


def test_namespaces_are_implied_by_pods_and_policies_and_labelled_by_namespace_objects():
    c = NetworkPolicyController()
    w = World(c)
    feed(w, pod("c1", "10.32.0.1", {"app": "web"}), pod("c3", "10.32.0.3", namespace="other"))
    assert {n: ns.labels for n, ns in w.namespaces.items()} == {
        "default": {NAME_LABEL: "default"}, "other": {NAME_LABEL: "other"}}
    assert members(c, default_allow_set_name("default", PolicyType.INGRESS)) == {"10.32.0.1"}

    feed(w, StoreEntry(namespace_key("other"), 1, A, {"metadata": {"labels": {"team": "a"}}}))
    assert w.namespaces["other"].labels == {"team": "a", NAME_LABEL: "other"}
    assert feed(w, StoreEntry(policy_key("default", "web"), 1, A, WEB)) == []
    listset = ipset_name(":team=a")
    assert members(c, listset) == {all_pods_spec("other").ipset_name}
    assert members(c, default_allow_set_name("default", PolicyType.INGRESS)) == set(), "web is isolated"

    w.remove(namespace_key("other"))
    assert members(c, listset) == set(), "the labels went with the Namespace object"
    w.remove(pod_key(A, "c3"))
    assert set(w.namespaces) == {"default"}, "nothing names 'other' any more"


def test_a_label_change_moves_one_pod():
    c = NetworkPolicyController()
    w = World(c)
    feed(w, StoreEntry(policy_key("default", "web"), 1, A, WEB), pod("c1", "10.32.0.1", {"app": "web"}),
         pod("c2", "10.32.0.2", {"app": "db"}))
    target = ipset_name("default:app=web")
    assert members(c, target) == {"10.32.0.1"}
    feed(w, pod("c2", "10.32.0.2", {"app": "web"}))
    assert members(c, target) == {"10.32.0.1", "10.32.0.2"}
    assert w.describe("10.32.0.2") == "namespace default, pod c2"
    feed(w, StoreEntry(pod_key(A, "c2"), 2, A, None))
    assert members(c, target) == {"10.32.0.1"} and w.describe("10.32.0.2") == "not a known pod"
    assert [p.ip for _, p in w.pods()] == ["10.32.0.1"]


def test_rejected_policies_are_reported_and_held():
    c = NetworkPolicyController()
    w = World(c)
    bad = {"spec": {"podSelector": {}, "ingress": [{"ports": [{"port": "http"}]}]}}
    [rejection] = feed(w, StoreEntry(policy_key("default", "np"), 1, A, bad))
    assert rejection.attrs["name"] == "np" and "named port" in rejection.message
    assert "NetworkPolicy/default/np" in c.rejected and len(w.policies()) == 1
    feed(w, StoreEntry(policy_key("default", "np"), 2, A, WEB))
    assert c.rejected == {}, "the fixed version is accepted"
