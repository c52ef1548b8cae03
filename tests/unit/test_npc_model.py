import pytest

from services.npc.model import (
    Namespace, NetworkPolicy, Pod, load_manifests, parse_object,
)
from shared.errors import RemoteProtocolError

API_POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "web-1", "namespace": "shop", "uid": "u-1", "labels": {"app": "web"},
                 "resourceVersion": "42", "ownerReferences": [{"kind": "ReplicaSet"}]},
    "spec": {"containers": [{"name": "c", "image": "nginx"}], "nodeName": "n1"},
    "status": {"phase": "Running", "podIP": "10.32.0.5", "podIPs": [{"ip": "10.32.0.5"}],
               "conditions": []},
}


def test_api_pod_unknown_fields_are_ignored():
    pod = parse_object(API_POD)
    assert isinstance(pod, Pod)
    assert (pod.namespace, pod.uid, pod.ip, pod.metadata.labels) == ("shop", "u-1", "10.32.0.5", {"app": "web"})
    assert pod.has_ip


@pytest.mark.parametrize(
    "phase,ip,host_network,counts",
    [
        ("Running", "10.32.0.5", False, True),
        ("Pending", "10.32.0.5", False, True),
        ("", "10.32.0.5", False, True),
        ("Succeeded", "10.32.0.5", False, False),
        ("Failed", "10.32.0.5", False, False),
        ("Running", "", False, False),
        ("Running", None, False, False),
        ("Running", "10.32.0.5", True, False),
    ],
)
def test_which_pods_count(phase, ip, host_network, counts):
    pod = Pod.model_validate({"metadata": {"name": "p"}, "spec": {"hostNetwork": host_network},
                              "status": {"phase": phase, "podIP": ip}})
    assert pod.has_ip is counts


def test_identity_falls_back_to_namespace_and_name():
    pod = Pod.model_validate({"metadata": {"name": "p"}})
    assert (pod.namespace, pod.uid) == ("default", "default/p")
    ns = Namespace.model_validate({"metadata": {"name": "a", "labels": None}})
    assert ns.labels == {}


@pytest.mark.parametrize(
    "spec,types,is_egress",
    [
        ({}, ("Ingress",), False),
        ({"ingress": [{}]}, ("Ingress",), False),
        ({"egress": [{}]}, ("Ingress", "Egress"), True),
        ({"egress": []}, ("Ingress",), True),            # weave: egress present, even empty
        ({"egress": None}, ("Ingress",), False),
        ({"policyTypes": ["Egress"]}, ("Egress",), True),
        ({"policyTypes": ["Ingress"], "egress": [{}]}, ("Ingress",), True),
    ],
)
def test_policy_types_default_as_the_api_server_does(spec, types, is_egress):
    policy = NetworkPolicy.model_validate({"metadata": {"name": "p"}, "spec": spec})
    assert policy.policy_types == types
    assert policy.is_egress is is_egress


def test_policy_shapes():
    policy = NetworkPolicy.model_validate({
        "metadata": {"name": "p", "namespace": "n"},
        "spec": {
            "podSelector": {"matchExpressions": [{"key": "a", "operator": "Exists"}]},
            "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
                                  {"podSelector": {}, "namespaceSelector": {"matchLabels": {"x": "y"}}}],
                         "ports": [{"port": "http"}, {"protocol": "UDP", "port": 53, "endPort": 60}]}],
        },
    })
    rule = policy.spec.ingress[0]
    assert rule.from_[0].ip_block.except_ == ["10.1.0.0/16"]
    assert rule.from_[1].pod_selector.match_labels == {}
    assert rule.from_[1].namespace_selector.match_labels == {"x": "y"}
    assert [(p.protocol, p.port, p.end_port) for p in rule.ports] == [(None, "http", None), ("UDP", 53, 60)]
    assert policy.spec.pod_selector.match_expressions[0].values == []


def test_load_manifests_flattens_lists_and_skips_empty_documents():
    text = """
apiVersion: v1
kind: List
items:
- {kind: Namespace, metadata: {name: a, labels: {team: x}}}
- {kind: Pod, metadata: {name: p, namespace: a}, status: {podIP: 10.0.0.1}}
---
---
kind: NetworkPolicy
apiVersion: networking.k8s.io/v1
metadata: {name: deny, namespace: a}
spec: {podSelector: {}}
"""
    objects = load_manifests(text)
    assert [type(o).__name__ for o in objects] == ["Namespace", "Pod", "NetworkPolicy"]


@pytest.mark.parametrize(
    "raw",
    [{"kind": "Service"}, {"metadata": {}}, {"kind": "Pod", "metadata": {"labels": ["not", "a", "map"]}}],
)
def test_bad_objects_are_remote_errors(raw):
    with pytest.raises(RemoteProtocolError) as info:
        parse_object(raw)
    assert info.value.code == "bad_object"
