import pytest

from services.npc.ipset import IPSetType
from services.npc.model import LabelSelector
from services.npc.selector import Selector, SelectorError, all_pods_spec, new_selector_spec


def sel(match_labels=None, *expressions):
    return LabelSelector.model_validate({
        "matchLabels": match_labels or {},
        "matchExpressions": [{"key": k, "operator": op, "values": list(v)} for k, op, v in expressions],
    })


@pytest.mark.parametrize(
    "selector,text",
    [
        (sel(), ""),
        (sel({"run": "bar"}), "run=bar"),
        (sel({"tier": "db", "app": "shop"}), "app=shop,tier=db"),
        (sel(None, ("env", "In", ["prod", "dev"])), "env in (dev,prod)"),
        (sel(None, ("env", "NotIn", ["qa"])), "env notin (qa)"),
        (sel(None, ("env", "Exists", [])), "env"),
        (sel(None, ("env", "DoesNotExist", [])), "!env"),
        (sel({"z": "1"}, ("a", "Exists", []), ("m", "In", ["y", "x"])), "a,m in (x,y),z=1"),
        # stable by key: matchLabels first, then expressions in their order
        (sel({"a": "1"}, ("a", "NotIn", ["2"]), ("a", "Exists", [])), "a=1,a notin (2),a"),
        (sel({"k8s.io/app": "x"}), "k8s.io/app=x"),
    ],
)
def test_kubernetes_string_form(selector, text):
    assert str(Selector.parse(selector)) == text


@pytest.mark.parametrize(
    "selector,labels,matches",
    [
        (sel(), {}, True),
        (sel({"a": "1"}), {"a": "1", "b": "2"}, True),
        (sel({"a": "1"}), {"a": "2"}, False),
        (sel({"a": "1"}), {}, False),
        (sel(None, ("a", "In", ["1", "2"])), {"a": "2"}, True),
        (sel(None, ("a", "In", ["1", "2"])), {}, False),
        (sel(None, ("a", "NotIn", ["1"])), {}, True),
        (sel(None, ("a", "NotIn", ["1"])), {"a": "1"}, False),
        (sel(None, ("a", "NotIn", ["1"])), {"a": "3"}, True),
        (sel(None, ("a", "Exists", [])), {"a": ""}, True),
        (sel(None, ("a", "DoesNotExist", [])), {"a": ""}, False),
        (sel(None, ("a", "DoesNotExist", [])), {"b": "1"}, True),
        (sel({"a": "1"}, ("b", "Exists", [])), {"a": "1"}, False),
    ],
)
def test_matching(selector, labels, matches):
    assert Selector.parse(selector).matches(labels) is matches


@pytest.mark.parametrize(
    "selector",
    [
        sel(None, ("a", "Equals", ["1"])),
        sel(None, ("a", "In", [])),
        sel(None, ("a", "Exists", ["1"])),
        sel({"bad key": "1"}),
        sel({"a": "no spaces"}),
        sel({"a": "x" * 64}),
    ],
)
def test_invalid_selectors(selector):
    with pytest.raises(SelectorError):
        Selector.parse(selector)


@pytest.mark.parametrize(
    "pod,namespace,ns_name,kind,key,comment",
    [
        (sel({"run": "bar"}), None, "default", IPSetType.HASH_IP, "run=bar",
         "pods: namespace: default, selector: run=bar"),
        (None, sel({"app": "source"}), "", IPSetType.LIST_SET, "app=source",
         "namespaces: selector: app=source"),
        # both: namespace part then pod part, no separator (weave's key)
        (sel({"run": "bar"}), sel({"app": "source"}), "", IPSetType.HASH_IP, "app=sourcerun=bar",
         "namespaces: selector: app=sourcerun=bar"),
    ],
)
def test_selector_specs(pod, namespace, ns_name, kind, key, comment):
    spec = new_selector_spec(pod, namespace, ns_name, kind)
    assert spec.key == key
    assert spec.rule_spec(True) == (("-m", "set", "--match-set", spec.ipset_name, "src"), comment)
    assert spec.rule_spec(False)[0][-1] == "dst"


def test_set_names_are_weaves():
    assert new_selector_spec(sel({"run": "bar"}), None, "default", IPSetType.HASH_IP).ipset_name == \
        "weave-bZ~x=yBgzH)Ht()K*Uv3z{M]Y"
    assert new_selector_spec(None, sel({"app": "source"}), "", IPSetType.LIST_SET).ipset_name == \
        "weave-I239Zp%sCvoVt*D6u=A!2]YEk"
    assert all_pods_spec("source").ipset_name == "weave-HboJG1fGgG]/SR%k9H#hv5e96"
    # podSelector {} in a policy shares the namespace's all-pods set
    assert new_selector_spec(sel(), None, "default", IPSetType.HASH_IP).ipset_name == \
        all_pods_spec("default").ipset_name == "weave-k?Z;25^M}|1s7P3|H9i;*;MhG"


def test_combined_spec_needs_both_to_match():
    spec = new_selector_spec(sel({"run": "bar"}), sel({"app": "source"}), "", IPSetType.HASH_IP)
    assert spec.matches_pod({"run": "bar"}, {"app": "source"})
    assert not spec.matches_pod({"run": "bar"}, {"app": "other"})
    assert not spec.matches_pod({"run": "baz"}, {"app": "source"})
