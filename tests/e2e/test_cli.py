"""The `weave` CLI end to end: templates over the live report, reset, and one-line errors
with hints for a stopped stack, a wrong argument and a missing root privilege."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.e2e.procs import wait_all_dead
from weavectl.testbed import weave_bin


def test_report_template_status_sections_and_reset(testbed_factory):
    tb = testbed_factory()
    tb.up(1)
    h = tb.host("h1")
    assert tb.weave(h, "report", "-f", "{{.Router.Name}} {{.IPAM.DefaultSubnet}}").stdout.strip() == \
        "aa:00:00:00:00:01 10.32.0.0/12"
    bad = tb.weave(h, "report", "-f", "{{.Router.Nope}}", check=False)
    assert bad.returncode == 1 and "no field 'Nope'" in bad.stderr
    status = tb.weave(h, "status").stdout
    for section in ("Service: router", "Service: ipam", "Service: dns", "Service: npc"):
        assert section in status
    ns = tb.add_container(h, 1)
    assert tb.exec("h1", ["ip", "link", "show", "weave"]).returncode == 0

    # never exit 0 without effect: names for a container that is not attached, or nothing to remove
    stray = tb.weave(h, "dns-add", "10.32.9.9", "somecontainer", "-h", "name.weave.local", check=False)
    assert stray.returncode == 1 and "somecontainer is not attached" in stray.stderr
    assert "weave dns-add IP... -h FQDN" in stray.stderr
    assert "name.weave.local" not in tb.weave(h, "status", "dns").stdout
    gone = tb.weave(h, "dns-remove", "10.32.9.9", "-h", "name.weave.local", check=False)
    assert gone.returncode == 1 and "nothing removed" in gone.stderr
    assert tb.weave(h, "dns-add", "10.32.9.9", "-h", "name.weave.local").returncode == 0
    assert tb.weave(h, "dns-remove", "10.32.9.9", "-h", "name.weave.local").returncode == 0
    after_verb = tb.exec("h1", [weave_bin(), "status", "peers", "--state-dir", h.state_dir])
    assert after_verb.returncode == 0 and h.name in after_verb.stdout
    pids = [int(p) for p in subprocess.run(["ip", "netns", "pids", h.ns], capture_output=True,
                                           text=True).stdout.split()]
    out = tb.weave(h, "reset")
    assert out.returncode == 0 and "weave reset" in out.stdout
    assert wait_all_dead(pids) == [], "reset stops every process"
    assert tb.exec("h1", ["ip", "link", "show", "weave"]).returncode != 0, "the bridge is gone"
    assert "ethwe" not in subprocess.run(["ip", "-n", ns, "link"], capture_output=True, text=True).stdout
    assert not Path(h.state_dir).exists()


@pytest.mark.parametrize("argv", [
    ["status"], ["report"], ["ps"], ["connect", "192.168.77.9"], ["dns-lookup", "x"], ["rmpeer", "h9"],
    ["attach", "nosuchns"], ["policy", "list"], ["ps-services"],
])
def test_stopped_stack_gives_a_reason_and_a_hint(argv, tmp_path):
    out = subprocess.run([weave_bin(), "--state-dir", str(tmp_path), *argv], capture_output=True, text=True)
    assert out.returncode == 1, out
    lines = out.stderr.strip().splitlines()
    assert lines and lines[0].startswith(f"weave {argv[0]}:"), out.stderr
    assert any(line.startswith("hint:") for line in lines), out.stderr


@pytest.mark.parametrize("argv", [["launch", "--conn-limit", "x"], ["status", "nope"], ["frobnicate"],
                                  ["attach"], ["restart"]])
def test_wrong_arguments_exit_2_with_usage(argv):
    out = subprocess.run([weave_bin(), *argv], capture_output=True, text=True)
    assert out.returncode == 2 and "usage:" in out.stderr


def test_launch_without_root_says_so(tmp_path):
    out = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", weave_bin(),
                          "--state-dir", str(tmp_path / "s"), "launch"], capture_output=True, text=True)
    assert out.returncode == 1 and "needs root" in out.stderr and "hint: run it with sudo" in out.stderr


def test_every_command_has_help():
    top = subprocess.run([weave_bin(), "--help"], capture_output=True, text=True).stdout
    commands = ["launch", "stop", "reset", "restart", "connect", "forget", "status", "report", "ps", "attach",
                "detach", "expose", "hide", "dns-add", "dns-remove", "dns-lookup", "rmpeer", "prime", "version",
                "setup-cni", "testbed", "demo", "trace", "policy", "ps-services"]
    for cmd in commands:
        assert cmd in top, cmd
        out = subprocess.run([weave_bin(), cmd, "--help"], capture_output=True, text=True)
        assert out.returncode == 0 and "usage: weave" in out.stdout, cmd
