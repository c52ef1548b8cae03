"""The fastpath's heartbeat socket on a real veth pair in a scratch namespace: a heartbeat
read late (as the datapath does at rest, once a beat) keeps the time the kernel received
it, so the overlay switch judges it by when it came, not by when it was read. The
namespace is removed by name, also on failure."""
from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
LATE_S = 0.5

SCRIPT = f"""
import asyncio, json, time
from services.datapath import fastpath as fp
from services.datapath.fastpath_shell import FastpathShell
from shared.weave.peer_name import PeerName

h1, h2 = PeerName.parse("aa:00:00:00:00:01"), PeerName.parse("aa:00:00:00:00:02")
tx, rx = fp.HeartbeatSocket("hb0"), fp.HeartbeatSocket("hb1")

async def main():
    shell = FastpathShell(h2, "10.0.0.2", "weave", "vethwe-bridge")
    shell.hb = rx
    loop = asyncio.get_running_loop()
    sent = loop.time()
    tx.send(fp.encode_heartbeat(h1, h2, 7, True, idle=True))
    tx.send(b"not a heartbeat".ljust(60, b"\\0"))
    await asyncio.sleep({LATE_S})
    got = shell.drain()
    return {{"sent": sent, "read": loop.time(), "again": len(shell.drain()),
            "got": [[str(hb.src), hb.conn_uid, hb.hearing, hb.idle, at] for hb, at in got]}}

print(json.dumps(asyncio.run(main())))
"""


@pytest.fixture
def pair():
    ns = f"whb-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for cmd in (["link", "add", "hb0", "type", "veth", "peer", "name", "hb1"],
                    ["link", "set", "hb0", "up"], ["link", "set", "hb1", "up"]):
            subprocess.run(["ip", "-n", ns, *cmd], check=True)
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def test_a_heartbeat_read_late_keeps_its_arrival_time(pair):
    out = subprocess.run(["ip", "netns", "exec", pair, sys.executable, "-c", SCRIPT], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert len(seen["got"]) == 1, seen  # the frame of another ethertype never reaches the socket
    src, uid, hearing, idle, at = seen["got"][0]
    assert (src, uid, hearing, idle) == ("aa:00:00:00:00:01", 7, True, True)
    assert seen["read"] - seen["sent"] >= LATE_S
    assert -0.01 < at - seen["sent"] < 0.1, seen  # when it came (to the clocks' conversion), not when read
    assert seen["again"] == 0  # read once
