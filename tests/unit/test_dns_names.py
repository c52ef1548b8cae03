"""Checks on user input (services/dns/names.py), the CLI's argument shapes
(weavectl/commands/dns.py) and the snapshot rules (services/dns/snapshot.py)."""
from __future__ import annotations

import argparse

import pytest

from services.dns import snapshot
from services.dns.entry import GOSSIP_WINDOW_S, DnsEntry
from shared.weave.dns_names import BadAddress, BadName, check_fqdn, looks_like_address, parse_ipv4
from shared.weave.peer_name import PeerName
from shared.errors import LocalProtocolError
from weavectl.cli import build_parser
from weavectl.commands.dns import parse_args
from weavectl.launcher import LaunchError


@pytest.mark.parametrize("name, expected", [
    ("web.weave.local", "web.weave.local."),
    ("Web-1.weave.local.", "Web-1.weave.local."),
    ("_srv.x", "_srv.x."),
    ("a" * 63 + ".b", "a" * 63 + ".b."),
    (".".join(["a" * 63] * 3 + ["a" * 61]), ".".join(["a" * 63] * 3 + ["a" * 61]) + "."),  # 255 bytes on the wire
])
def test_good_names(name, expected):
    assert check_fqdn(name) == expected


@pytest.mark.parametrize("name, words", [
    ("", "required"),
    (".", "required"),
    (".".join(["a" * 63] * 3 + ["a" * 62]), "256 bytes in DNS form; the limit is 255"),
    ("a" * 64 + ".weave.local", "over 63 bytes"),
    ("a..weave.local", "empty label"),
    (".weave.local", "empty label"),
    ("-web.weave.local", "invalid label '-web'"),
    ("web-.weave.local", "invalid label 'web-'"),
    ("we b.weave.local", "invalid label 'we b'"),
    ("wéb.weave.local", "invalid label"),
])
def test_bad_names_say_why_in_one_line(name, words):
    with pytest.raises(BadName) as exc:
        check_fqdn(name)
    assert words in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("text, value", [("10.32.0.1", 0x0A200001), ("::ffff:10.0.0.1", 0x0A000001)])
def test_ipv4_addresses(text, value):
    assert parse_ipv4(text) == value


@pytest.mark.parametrize("text, words", [("fe80::1", "IPv6 address; weaveDNS holds IPv4"),
                                          ("10.0.0.300", "not an IPv4 address"), ("web", "not an IPv4")])
def test_non_ipv4_addresses(text, words):
    with pytest.raises(BadAddress, match=words):
        parse_ipv4(text)


@pytest.mark.parametrize("text, looks", [("10.0.0.1", True), ("10.0.0.300", True), ("fe80::1", True),
                                          ("c1", False), ("weave:extern", False), ("10.0.0", False)])
def test_what_the_cli_takes_for_an_address(text, looks):
    assert looks_like_address(text) is looks


@pytest.mark.parametrize("argv, fqdn, expected", [
    (["c1"], None, ([], "c1", None)),
    (["10.0.0.1", "10.0.0.2", "c1"], "web.weave.local", (["10.0.0.1", "10.0.0.2"], "c1", "web.weave.local.")),
    (["10.0.0.1"], "ext.weave.local", (["10.0.0.1"], None, "ext.weave.local.")),
])
def test_cli_shapes(argv, fqdn, expected):
    assert parse_args(argv, fqdn) == expected


@pytest.mark.parametrize("argv, fqdn, words", [
    ([], None, "give a container, or addresses and -h FQDN"),
    (["10.0.0.1"], None, "give a container"),
    (["c1", "c2"], None, "unexpected argument 'c2'"),
    (["c1", "10.0.0.1"], None, "unexpected argument '10.0.0.1'"),
    (["fe80::1"], "web.weave.local", "IPv6 address"),
    (["10.0.0.256", "c1"], None, "'10.0.0.256' is not an IPv4 address"),
    (["c1"], "x" * 64 + ".weave.local", "over 63 bytes"),
])
def test_cli_refuses_with_one_line(argv, fqdn, words):
    with pytest.raises(LaunchError) as exc:
        parse_args(argv, fqdn)
    assert words in exc.value.reason and "\n" not in exc.value.reason


def test_cli_parser_takes_dash_h_as_the_name_and_status_dns():
    parser = build_parser()
    args = parser.parse_args(["dns-add", "10.0.0.1", "c1", "-h", "web.weave.local"])
    assert (args.args, args.fqdn) == (["10.0.0.1", "c1"], "web.weave.local")
    assert parser.parse_args(["status", "dns"]).view == "dns"
    with pytest.raises(SystemExit):
        parser.parse_args(["status", "bogus"])
    assert isinstance(parser.parse_args(["dns-lookup", "web"]), argparse.Namespace)


US, THEM = PeerName.parse("aa:00:00:00:00:01"), PeerName.parse("aa:00:00:00:00:02")
OURS = DnsEntry("c1", US, 1, "a.weave.local.", 2, 0)
THEIRS = DnsEntry("c2", THEM, 2, "b.weave.local.", 0, 0)
NOW = 1_700_000_000.0


@pytest.mark.parametrize("incarnation, age, expected", [
    ("run-1", 10, (OURS, THEIRS)),  # a dns restart within the stack's run: everything
    ("run-1", GOSSIP_WINDOW_S + 1, (OURS,)),  # an old snapshot: gossip re-teaches theirs
    ("run-2", 10, ()),  # a new run of the stack starts empty, as Weave's weaver
])
def test_what_a_snapshot_restores(incarnation, age, expected):
    snap = snapshot.loads(snapshot.dumps(snapshot.Snapshot("run-1", NOW - age, (OURS, THEIRS))))
    assert snap.entries == (OURS, THEIRS)
    assert snapshot.restorable(snap, our_name=US, incarnation=incarnation, now=NOW) == expected


@pytest.mark.parametrize("data", [b"", b"[]", b'{"format": 2}', b'{"format": 1, "entries": [[1]]}',
                                  b'{"format":1,"incarnation":"x","saved_at":1,"entries":[["h","zz","c",1,0,0]]}'])
def test_unreadable_snapshots_are_refused(data):
    with pytest.raises(LocalProtocolError, match="unreadable dns snapshot"):
        snapshot.loads(data)
