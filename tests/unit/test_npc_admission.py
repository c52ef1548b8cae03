"""`weave policy apply` admission: all or nothing, each refusal naming the document and why."""
from __future__ import annotations

import pytest

from services.npc.admission import AdmissionRefused, admit
from services.npc.model import parse_object

GOOD = """
kind: NetworkPolicy
metadata: {name: web, namespace: prod}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{from: [{podSelector: {matchLabels: {app: db}}}], ports: [{port: 80}]}]
"""


def refused(manifest, current=()):
    with pytest.raises(AdmissionRefused) as err:
        admit(manifest, current)
    assert err.value.code == "bad_request" and "nothing applied" in err.value.message
    return err.value.problems


def test_policies_and_namespaces_are_admitted_with_their_keys():
    items = admit(GOOD + "---\nkind: Namespace\nmetadata: {name: prod, labels: {team: a}}\n"
                  "---\nkind: NetworkPolicy\nmetadata: {name: deny}\nspec: {podSelector: {}}\n")
    assert [(i.key, i.ref.kind, i.ref.namespace, i.ref.name) for i in items] == [
        ("NetworkPolicy/prod/web", "NetworkPolicy", "prod", "web"),
        ("Namespace/prod", "Namespace", "", "prod"),
        ("NetworkPolicy/default/deny", "NetworkPolicy", "default", "deny")]
    assert items[0].value["spec"]["ingress"][0]["ports"] == [{"port": 80}]


def test_lists_are_flattened_and_a_later_document_of_one_name_wins():
    items = admit('{"kind": "List", "items": [{"kind": "NetworkPolicy", "metadata": {"name": "a"}, '
                  '"spec": {"podSelector": {}}}]}\n---\n'
                  'kind: NetworkPolicy\nmetadata: {name: a}\nspec: {podSelector: {matchLabels: {x: y}}}\n')
    assert len(items) == 1 and items[0].value["spec"]["podSelector"] == {"matchLabels": {"x": "y"}}


@pytest.mark.parametrize("manifest, what, why", [
    ("kind: NetworkPolicy\nmetadata: {name: np}\nspec:\n  podSelector: {}\n  ingress: [{ports: [{port: http}]}]\n",
     "NetworkPolicy default/np", "named ports in network policies is not supported yet"),
    ("kind: NetworkPolicy\nmetadata: {name: np}\nspec:\n  podSelector: {}\n"
     "  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/33}}]}]\n", "NetworkPolicy default/np", "invalid CIDR"),
    ("kind: NetworkPolicy\nmetadata: {name: np}\nspec:\n  podSelector: {}\n"
     "  egress: [{to: [{ipBlock: {cidr: 10.0.0.0/8, except: [fd00::/8]}}]}]\n", "NetworkPolicy default/np", "IPv4 only"),
    ("kind: NetworkPolicy\nmetadata: {name: np}\nspec:\n  podSelector: {}\n"
     "  ingress: [{ports: [{protocol: ICMP, port: 1}]}]\n", "NetworkPolicy default/np", "unsupported protocol 'ICMP'"),
    ("kind: NetworkPolicy\nmetadata: {name: np}\nspec:\n  podSelector: {matchExpressions: [{key: a, operator: Is}]}\n",
     "NetworkPolicy default/np", "not a valid pod selector operator"),
    ("kind: NetworkPolicy\nmetadata: {name: np}\nspec:\n  podSelector: {}\n  ingress: [{ports: [{port: 99999}]}]\n",
     "NetworkPolicy default/np", "out of range"),
    ("kind: Pod\nmetadata: {name: p}\n", "document 1", "pods are not applied"),
    ("kind: Service\nmetadata: {name: s}\n", "document 1", "is not NetworkPolicy or Namespace"),
    ("kind: NetworkPolicy\nspec: {podSelector: {}}\n", "document 1", "without metadata.name"),
    ("kind: NetworkPolicy\nmetadata: {name: np}\nspec: {podSelector: everything}\n", "document 1", "malformed"),
    ("kind: Namespace\nmetadata: {name: n, labels: {'bad key!': x}}\n", "document 1", "invalid label key"),
    ("- just\n- a list\n", "document 1", "not an object"),
    ("kind: [unclosed\n", "manifest", "unparseable YAML"),
    ("", "manifest", "no documents"),
])
def test_refusals_name_the_document_and_the_reason(manifest, what, why):
    [(got_what, got_why)] = refused(manifest)
    assert got_what == what and why in got_why


def test_one_bad_document_refuses_the_whole_manifest():
    problems = refused(GOOD + "---\nkind: NetworkPolicy\nmetadata: {name: bad}\nspec:\n  podSelector: {}\n"
                       "  ingress: [{ports: [{port: http}]}]\n---\nkind: Pod\nmetadata: {name: p}\n")
    assert [what for what, _ in problems] == ["document 3", "NetworkPolicy default/bad"]


def test_judged_among_the_policies_already_enforced():
    """weave names `podSelector: {}` + namespaceSelector sets like namespace-only list:sets:
    the compiler refuses the policy that would bring the second type, and so does admission."""
    ns_only = parse_object({"kind": "NetworkPolicy", "metadata": {"name": "a", "namespace": "default",
                                                                   "uid": "NetworkPolicy/default/a"},
                            "spec": {"podSelector": {}, "ingress": [{"from": [
                                {"namespaceSelector": {"matchLabels": {"t": "x"}}}]}]}})
    clash = ("kind: NetworkPolicy\nmetadata: {name: b}\nspec:\n  podSelector: {}\n  ingress: [{from: "
             "[{namespaceSelector: {matchLabels: {t: x}}, podSelector: {}}]}]\n")
    [(what, why)] = refused(clash, [ns_only])
    assert what == "NetworkPolicy default/b" and "already a list:set set" in why
    assert len(admit(clash)) == 1, "alone it is fine"
    replacing_a = clash.replace("name: b", "name: a")
    assert len(admit(replacing_a, [ns_only])) == 1, "a new version of the same policy replaces it"
