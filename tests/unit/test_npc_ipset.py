import pytest

from services.npc.ipset import (
    IPSet, IPSetType, add_line, create_line, is_ours, normalize_member, parse_ipset_save, render_save,
)
from shared.errors import RemoteProtocolError

SAVED = """create weave-;rGqyMIl1HN^cfDki~Z$3]6!N hash:ip family inet hashsize 1024 maxelem 65536 comment
add weave-;rGqyMIl1HN^cfDki~Z$3]6!N 10.32.0.10 comment "namespace: default, pod: foo"
create weave-I239Zp%sCvoVt*D6u=A!2]YEk list:set size 1024 comment
add weave-I239Zp%sCvoVt*D6u=A!2]YEk weave-HboJG1fGgG]/SR%k9H#hv5e96 comment "namespace: source"
create weave-j:W$5om!$8JS})buYAD7q^#sX hash:net family inet hashsize 1024 maxelem 65536 comment
add weave-j:W$5om!$8JS})buYAD7q^#sX 192.168.48.1 comment "excepted from 192.168.48.0/24"
create KUBE-xyz bitmap:port range 0-65535
create other hash:ip family inet hashsize 1024 maxelem 65536
add other 1.2.3.4
"""


def test_parse_ipset_save():
    sets = parse_ipset_save(SAVED)
    assert list(sets) == ["weave-;rGqyMIl1HN^cfDki~Z$3]6!N", "weave-I239Zp%sCvoVt*D6u=A!2]YEk",
                          "weave-j:W$5om!$8JS})buYAD7q^#sX", "other"]
    assert dict(sets["weave-;rGqyMIl1HN^cfDki~Z$3]6!N"].members) == {"10.32.0.10": "namespace: default, pod: foo"}
    assert sets["weave-I239Zp%sCvoVt*D6u=A!2]YEk"].type is IPSetType.LIST_SET
    assert sets["weave-j:W$5om!$8JS})buYAD7q^#sX"].negated
    assert dict(sets["other"].members) == {"1.2.3.4": ""}


def test_render_then_parse_round_trip():
    sets = {s.name: s for s in parse_ipset_save(SAVED).values()}
    assert parse_ipset_save(render_save(sets)) == sets


@pytest.mark.parametrize(
    "kind,member,key",
    [
        (IPSetType.HASH_NET, "192.168.48.1/32", "192.168.48.1"),
        (IPSetType.HASH_NET, "10.0.0.5/24", "10.0.0.0/24"),
        (IPSetType.HASH_NET, "10.0.0.0/24", "10.0.0.0/24"),
        (IPSetType.HASH_IP, "10.32.0.1", "10.32.0.1"),
        (IPSetType.LIST_SET, "weave-x", "weave-x"),
    ],
)
def test_members_compare_as_the_kernel_stores_them(kind, member, key):
    assert normalize_member(kind, member) == key


def test_restore_lines_are_weaves():
    assert create_line(IPSet("weave-a", IPSetType.HASH_IP)) == "create weave-a hash:ip comment"
    assert create_line(IPSet("weave-l", IPSetType.LIST_SET)) == "create weave-l list:set size 1024 comment"
    assert create_line(IPSet("weave-l", IPSetType.LIST_SET), max_list_size=8, comments=False) == \
        "create weave-l list:set size 8"
    assert add_line("weave-a", "10.0.0.1", "namespace: a, pod: b") == 'add weave-a 10.0.0.1 comment "namespace: a, pod: b"'


@pytest.mark.parametrize("name,ours", [("weave-abc", True), ("weave-no-masq-local", False), ("KUBE-x", False)])
def test_ownership(name, ours):
    assert is_ours(name) is ours


@pytest.mark.parametrize("bad", ["add nothere 1.2.3.4", 'create x hash:ip comment "open', "flush x"])
def test_bad_save_text(bad):
    with pytest.raises(RemoteProtocolError):
        parse_ipset_save(bad)
