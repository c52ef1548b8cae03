"""ipset names: golden values taken from weave's own tests and docs (real Go output)."""
import hashlib

import pytest
from hypothesis import given, strategies as st

from services.npc.shortname import SHORT_NAME_SYMBOLS, ipset_name, short_name


@pytest.mark.parametrize(
    "key,name,source",
    [
        # weave:npc/controller_test.go TestDefaultAllow
        ("ingress-default-allow:default", "weave-;rGqyMIl1HN^cfDki~Z$3]6!N", "controller_test.go"),
        ("egress-default-allow:default", "weave-s_+ChJId4Uy_$}G;WdH|~TK)I", "controller_test.go"),
        # TestOutOfOrderPodEvents: pod selector run=bar in namespace default
        ("default:run=bar", "weave-bZ~x=yBgzH)Ht()K*Uv3z{M]Y", "controller_test.go"),
        # TestRegressionPolicyNamespaceOrdering3059: namespace selector, all-pods of "source"
        (":app=source", "weave-I239Zp%sCvoVt*D6u=A!2]YEk", "controller_test.go"),
        ("source:", "weave-HboJG1fGgG]/SR%k9H#hv5e96", "controller_test.go"),
        # TestEgressPolicyWithIPBlock: except sets in two namespaces
        ("default:ipblock-except:192.168.48.1/32 192.168.48.2/32", "weave-j:W$5om!$8JS})buYAD7q^#sX",
         "controller_test.go"),
        ("non-default:ipblock-except:192.168.48.1/32 192.168.48.2/32", "weave-|*P{aL2C@#N/1IZ!IvQItv_pt",
         "controller_test.go"),
        # weave:docs/weavenpc-design.md example name: the all-pods set of "default"
        ("default:", "weave-k?Z;25^M}|1s7P3|H9i;*;MhG", "weavenpc-design.md"),
    ],
)
def test_golden_names(key, name, source):
    assert ipset_name(key) == name


def test_alphabet_is_weaves():
    assert len(SHORT_NAME_SYMBOLS) == 85
    assert len(set(SHORT_NAME_SYMBOLS)) == 85
    assert not set(SHORT_NAME_SYMBOLS) & set(", '\"\\<>&")


@given(st.text())
def test_digits_decode_back_to_the_sha1(key):
    name = short_name(key)
    value = sum(SHORT_NAME_SYMBOLS.index(c) * 85**i for i, c in enumerate(name))
    assert value == int.from_bytes(hashlib.sha1(key.encode()).digest(), "big")
    assert len(ipset_name(key)) <= 31
