"""Every verb of the `weave` CLI with wrong, missing and extra arguments, and with no stack
running: each answers with one line that says what is wrong (maybe one `hint:` or
`usage:` line after it) and a non-zero exit; never a traceback, never exit 0 without
effect. Run in a namespace of its own, so nothing answers on 127.0.0.1:6784 or the bus."""
from __future__ import annotations

import secrets
import subprocess

import pytest

from tests.e2e.conftest import Netns
from weavectl.testbed import Testbed, weave_bin


@pytest.fixture(scope="module")
def quiet_ns(tmp_path_factory):
    """One scratch namespace for the whole table (no stack is ever started in it)."""
    name = f"wtcli-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    yield Netns(name, tmp_path_factory.mktemp("cli") / "state")
    Testbed._kill_namespace_pids(name)
    subprocess.run(["ip", "netns", "del", name], check=False)

POLICY = "kind: NetworkPolicy\nmetadata: {name: x}\nspec: {podSelector: {}}\n"

# (argv, exit code, words the first line must hold)
STOPPED = [
    ("stop", 1, "not running"), ("restart dns", 1, "not running"), ("ps-services", 1, "not running"),
    ("status", 1, "cannot reach"), ("status peers", 1, "cannot reach"), ("report", 1, "cannot reach"),
    ("connect 1.2.3.4", 1, "cannot reach"), ("forget 1.2.3.4", 1, "cannot reach"),
    ("attach ns1", 1, "not running"), ("detach ns1", 1, "not running"), ("ps", 1, "not running"),
    ("expose", 1, "not running"), ("hide", 1, "not running"),
    ("dns-add 10.32.0.1 -h a.weave.local", 1, "cannot reach"), ("dns-add 10.32.0.1 c1 -h a.weave.local", 1,
                                                                 "not running"),
    ("dns-remove 10.32.0.1 -h a.weave.local", 1, "not running"), ("dns-lookup a", 1, "cannot reach"),
    ("rmpeer h9", 1, "cannot reach"), ("prime", 1, "not running"), ("ipam allocate c1", 1, "not running"),
    ("ipam claim c1 10.32.0.1/12", 1, "not running"), ("ipam release c1", 1, "not running"),
    ("ipam lookup c1", 1, "not running"), ("ipam status", 1, "not running"),
    ("policy apply {policy}", 1, "not running"), ("policy delete x", 1, "not running"),
    ("policy list", 1, "not running"), ("policy status", 1, "cannot reach"), ("trace", 1, "no traces"),
]
WRONG = [
    ("launch --conn-limit x", 2, "invalid int value"), ("launch --datapath nope", 2, "invalid choice"),
    ("status nope", 2, "invalid choice"), ("frobnicate", 2, "invalid choice"),
    ("attach", 2, "required"), ("restart", 2, "required"), ("connect", 2, "required"), ("forget", 2, "required"),
    ("dns-add", 1, "give a container"), ("dns-add 10.32.0.1", 1, "give a container"),
    ("dns-add 999.1.1.1 -h a.weave.local", 1, "not an IPv4 address"),
    ("dns-add 10.32.0.1 -h bad!name", 1, "invalid label"),
    ("dns-add 10.32.0.1 c1 extra -h x.weave.local", 1, "unexpected argument 'extra'"),
    ("dns-lookup", 2, "required"), ("ipam allocate", 2, "required"),
    ("ipam claim c1 notacidr", 2, "not an IPv4 address"), ("ipam release c1 10.32.0.300", 2, "not an IPv4"),
    ("policy apply", 2, "required"), ("policy apply /nonexistent.yaml", 1, "cannot read"),
    ("policy delete", 2, "required"), ("rmpeer", 2, "required"), ("version extra", 2, "unrecognized"),
    ("ps-services extra", 2, "unrecognized"), ("testbed exec", 2, "required"), ("testbed kill h1", 2, "required"),
    ("testbed block h1 h2 icmp 1", 2, "invalid choice"), ("trace --last x", 2, "invalid int value"),
    ("ipam", 2, "required"), ("policy", 2, "required"), ("testbed", 2, "required"),
    ("launch --state-dir", 2, "expected one argument"),
]


@pytest.mark.parametrize("argv, code, words", STOPPED + WRONG, ids=[c[0] for c in STOPPED + WRONG])
def test_one_line_and_a_non_zero_exit(quiet_ns, tmp_path, argv, code, words):
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)
    out = quiet_ns.weave(*argv.format(policy=policy).split())
    lines = out.stderr.strip().splitlines()
    assert out.returncode == code, out
    assert "Traceback" not in out.stderr and out.stdout == "", out
    assert 1 <= len(lines) <= 2 and lines[0].startswith("weave"), out.stderr
    assert words in lines[0], lines[0]
    assert len(lines) == 1 or lines[1].startswith(("hint:", "usage:")), lines


def test_global_options_are_taken_after_the_verb(quiet_ns, tmp_path):
    """--state-dir anywhere; the testbed's --root/--prefix after its verb."""
    netns = quiet_ns
    before = netns.weave("--state-dir", str(tmp_path / "a"), "stop")
    after = netns.weave("stop", "--state-dir", str(tmp_path / "b"))
    assert str(tmp_path / "a") in before.stderr and str(tmp_path / "b") in after.stderr
    status = netns.run(weave_bin(), "testbed", "status", "--json", "--prefix", "wtnone",
                       "--root", str(tmp_path / "tb"))
    assert status.returncode == 0 and '"prefix": "wtnone"' in status.stdout, status
