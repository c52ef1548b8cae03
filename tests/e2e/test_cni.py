"""The weave-net CNI plugin driven exactly as a container runtime drives it: CNI_* in the
environment, the network config on stdin, inside testbed hosts; pods in namespaces."""
from __future__ import annotations

import ipaddress
import json
import subprocess
import time
from pathlib import Path

from weavectl.testbed import weave_bin

PLUGIN = str(Path(weave_bin()).with_name("weave-net"))


def cni(tb, host, command, container, netns, conf, ifname="eth0"):
    env = [f"CNI_COMMAND={command}", f"CNI_CONTAINERID={container}", f"CNI_NETNS={netns}",
           f"CNI_IFNAME={ifname}", "CNI_PATH=/opt/cni/bin"]
    out = tb.exec(host, ["env", *env, PLUGIN], input=json.dumps(conf), timeout=60)
    return out.returncode, (json.loads(out.stdout) if out.stdout.strip() else None)


def pod(tb, name):
    ns = f"{tb.prefix}-{name}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
    return ns, f"/var/run/netns/{ns}"


def wait_ready(tb, hosts):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        outs = [tb.weave(h, "status", "connections", check=False).stdout for h in hosts]
        if all(" established " in o for o in outs):
            return
        time.sleep(0.3)
    raise AssertionError("mesh not established")


CONF = {"cniVersion": "1.0.0", "name": "weave", "type": "weave-net", "hairpinMode": True}


def test_add_check_del_and_pod_to_pod_across_hosts(testbed_factory):
    tb = testbed_factory()
    tb.up(2)
    wait_ready(tb, ["h1", "h2"])
    ns1, path1 = pod(tb, "h1p1")
    ns2, path2 = pod(tb, "h2p1")
    rc, res1 = cni(tb, "h1", "ADD", "pod-one", path1, CONF)
    assert rc == 0, res1
    rc, res2 = cni(tb, "h2", "ADD", "pod-two", path2, {**CONF, "cniVersion": "0.4.0"})
    assert rc == 0, res2
    addr1 = ipaddress.ip_interface(res1["ips"][0]["address"])
    assert addr1 in ipaddress.ip_network("10.32.0.0/12") or addr1.ip in ipaddress.ip_network("10.32.0.0/12")
    assert res1["interfaces"][0]["name"] == "eth0" and res1["interfaces"][0]["sandbox"] == path1
    assert "version" not in res1["ips"][0] and res2["ips"][0]["version"] == "4"
    assert res1["routes"][0]["dst"] == "0.0.0.0/0"
    inside = subprocess.run(["ip", "-n", ns1, "-4", "addr", "show", "eth0"], capture_output=True, text=True).stdout
    assert str(addr1) in inside
    route = subprocess.run(["ip", "-n", ns1, "route"], capture_output=True, text=True).stdout
    assert f"default via {res1['ips'][0]['gateway']}" in route

    addr2 = res2["ips"][0]["address"].split("/")[0]
    ping = subprocess.run(["ip", "netns", "exec", ns1, "ping", "-c", "3", "-W", "2", addr2],
                          capture_output=True, text=True)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    # hairpinMode: the pod's port on the bridge sends its own traffic back to it
    ports = json.loads(tb.exec("h1", ["bridge", "-d", "-j", "link", "show"], check=True).stdout)
    pod_ports = [p for p in ports if p["ifname"].startswith("vethwepl")]
    assert pod_ports and all(p["hairpin"] is True for p in pod_ports), pod_ports

    # CHECK agrees with the result; ADD of an existing container is an error
    assert cni(tb, "h1", "CHECK", "pod-one", path1, {**CONF, "prevResult": res1})[0] == 0
    rc, err = cni(tb, "h1", "ADD", "pod-one", path1, CONF)
    assert rc == 1 and err["code"] == 7 and "already has eth0" in err["msg"]

    # DEL twice, and DEL of a namespace that is gone, all succeed; the address is freed
    assert cni(tb, "h1", "DEL", "pod-one", path1, CONF)[0] == 0
    assert cni(tb, "h1", "DEL", "pod-one", path1, CONF)[0] == 0
    assert "eth0" not in subprocess.run(["ip", "-n", ns1, "link"], capture_output=True, text=True).stdout
    rc, err = cni(tb, "h1", "CHECK", "pod-one", path1, {**CONF, "prevResult": res1})
    assert rc == 1 and err["code"] == 3
    subprocess.run(["ip", "netns", "del", ns2], check=True)
    assert cni(tb, "h2", "DEL", "pod-two", path2, CONF)[0] == 0


def test_errors_are_cni_json(testbed_factory):
    tb = testbed_factory()
    tb.up(1)
    rc, err = cni(tb, "h1", "ADD", "x", "/var/run/netns/does-not-exist", CONF)
    assert rc == 1 and err["code"] == 3 and "does-not-exist" in err["msg"]
    rc, err = cni(tb, "h1", "ADD", "x", "/var/run/netns/x", {**CONF, "cniVersion": "9.9.9"})
    assert rc == 1 and err["code"] == 1
    rc, err = cni(tb, "h1", "ADD", "x", "/var/run/netns/x", {**CONF, "ipMasq": True})
    assert rc == 1 and err["code"] == 2
    out = tb.exec("h1", ["env", "CNI_COMMAND=VERSION", PLUGIN])
    assert "1.0.0" in json.loads(out.stdout)["supportedVersions"]
