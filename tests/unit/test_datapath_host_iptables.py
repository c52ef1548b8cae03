"""weaver's NAT / FORWARD rules for weave:expose (services/datapath/host_iptables.py):
the desired state, the restore text, and what `apply` / `remove` run (a recording
runner stands in for iptables here; tests/e2e/test_datapath_expose_nat.py runs the real
one)."""
from __future__ import annotations

from services.datapath.host_iptables import HostIptables, restore_text, rules, subnets
from shared.netfilter_tools import Backend, RunResult


def test_subnets_are_networks_in_order_without_repeats():
    assert subnets(["10.32.0.1/12", "10.40.0.7/16", "10.32.5.5/12"]) == ["10.32.0.0/12", "10.40.0.0/16"]


def test_weaves_nat_rules_and_no_filter_chain_with_npc():
    r = rules(["10.32.0.1/12"], npc=True)
    assert r.nat == (("-s", "10.32.0.0/12", "-d", "224.0.0.0/4", "-j", "RETURN"),
                     ("-s", "10.32.0.0/12", "!", "-d", "10.32.0.0/12", "-j", "MASQUERADE"))
    assert r.expose is None and r.forward == ()
    assert restore_text(r) == ("*nat\n:WEAVE - [0:0]\n"
                               "-A WEAVE -s 10.32.0.0/12 -d 224.0.0.0/4 -j RETURN\n"
                               "-A WEAVE -s 10.32.0.0/12 ! -d 10.32.0.0/12 -j MASQUERADE\nCOMMIT\n")


def test_without_npc_the_expose_chain_and_forward_rules_and_without_masquerade():
    r = rules(["10.32.0.1/12", "10.40.0.1/16"], unmasqueraded=["10.40.0.1/16"], npc=False)
    assert [x[-1] for x in r.nat] == ["RETURN", "MASQUERADE", "RETURN"]  # 10.40/16: no MASQUERADE
    assert r.expose == (("-d", "10.32.0.0/12", "-j", "ACCEPT"), ("-d", "10.40.0.0/16", "-j", "ACCEPT"))
    assert [" ".join(x) for x in r.forward] == [
        "-i weave -o weave -j ACCEPT", "-o weave -j WEAVE-EXPOSE", "-i weave ! -o weave -j ACCEPT",
        "-o weave -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"]
    assert "*filter\n:WEAVE-EXPOSE - [0:0]\n-A WEAVE-EXPOSE -d 10.32.0.0/12 -j ACCEPT\n" in restore_text(r)
    hidden = rules([], npc=False)  # hide everything: empty chains, the jumps stay
    assert hidden.nat == () and hidden.expose == () and restore_text(hidden).count("-A ") == 0


class Recorder:
    def __init__(self, present=(), fail=()) -> None:
        self.calls: list[tuple[list[str], str | None]] = []
        self.present = set(present)  # " ".join(rule) of rules -C finds
        self.fail = set(fail)

    def __call__(self, argv, stdin):
        self.calls.append((list(argv), stdin))
        if argv[0] in self.fail:
            return RunResult(1, "", "boom")
        if "-C" in argv:
            rule = " ".join(argv[argv.index("-C") + 2:])
            return RunResult(0 if rule in self.present else 1, "", "")
        return RunResult(0, "", "")


def test_apply_restores_the_chains_then_adds_missing_jumps_at_the_top():
    run = Recorder()
    HostIptables(Backend.NFT, run).apply(rules(["10.32.0.1/12"], npc=False))
    argvs = [" ".join(a) for a, _ in run.calls]
    assert argvs[0] == "iptables-nft-restore --noflush -w 5" and ":WEAVE - [0:0]" in run.calls[0][1]
    assert "iptables-nft -w 5 -t nat -A POSTROUTING -j WEAVE" in argvs
    inserts = [a for a in argvs if " -I FORWARD " in a]
    assert [a.split(" -I FORWARD ")[1][:1] for a in inserts] == ["1", "2", "3", "4"]


def test_apply_leaves_present_jumps_alone():
    r = rules(["10.32.0.1/12"], npc=False)
    run = Recorder(present={"-j WEAVE", *(" ".join(x) for x in r.forward)})
    HostIptables(Backend.LEGACY, run).apply(r)
    assert not any(("-A" in a or "-I" in a) for a, _ in run.calls[1:])
    assert run.calls[0][0][0] == "iptables-legacy-restore"


def test_a_failing_restore_is_an_error_naming_the_tool():
    import pytest

    from services.datapath.host_iptables import HostIptablesError

    with pytest.raises(HostIptablesError, match="iptables-nft-restore.*boom"):
        HostIptables(Backend.NFT, Recorder(fail={"iptables-nft-restore"})).apply(rules([], npc=True))


def test_remove_deletes_jumps_then_flushes_and_deletes_both_chains():
    run = Recorder()
    HostIptables(Backend.NFT, run).remove()
    argvs = [" ".join(a) for a, _ in run.calls]
    assert "iptables-nft -w 5 -t nat -D POSTROUTING -j WEAVE" in argvs
    assert argvs[-4:] == ["iptables-nft -w 5 -t nat -F WEAVE", "iptables-nft -w 5 -t nat -X WEAVE",
                          "iptables-nft -w 5 -t filter -F WEAVE-EXPOSE", "iptables-nft -w 5 -t filter -X WEAVE-EXPOSE"]
    assert sum(" -D FORWARD " in a for a in argvs) == 4


def test_source_filter_set_rule_members_and_removal():
    run = Recorder()
    nf = HostIptables(Backend.NFT, run)
    nf.ensure_source_filter(6784)
    argvs = [" ".join(a) for a, _ in run.calls]
    assert argvs[0] == "ipset create weavepy-vxlan-peers hash:ip -exist"  # kept if it exists
    assert argvs[-1] == ("iptables-nft -w 5 -t filter -I INPUT 1 -p udp --dport 6784 -m set ! --match-set "
                         "weavepy-vxlan-peers src -j DROP")
    run.calls.clear()
    nf.allow_source("192.168.77.2", True)
    nf.allow_source("192.168.77.2", False)
    assert [" ".join(a) for a, _ in run.calls] == ["ipset add weavepy-vxlan-peers 192.168.77.2 -exist",
                                                   "ipset del weavepy-vxlan-peers 192.168.77.2 -exist"]


def test_prune_keeps_only_the_allowed_peers():
    class Listing(Recorder):
        def __call__(self, argv, stdin):
            if argv[:2] == ["ipset", "list"]:
                self.calls.append((list(argv), stdin))
                return RunResult(0, "create weavepy-vxlan-peers hash:ip family inet\n"
                                    "add weavepy-vxlan-peers 10.0.0.2\nadd weavepy-vxlan-peers 10.0.0.3\n", "")
            return super().__call__(argv, stdin)

    run = Listing()
    assert HostIptables(Backend.NFT, run).prune_sources({"10.0.0.2"}) == 1
    assert run.calls[-1][0] == ["ipset", "del", "weavepy-vxlan-peers", "10.0.0.3", "-exist"]
