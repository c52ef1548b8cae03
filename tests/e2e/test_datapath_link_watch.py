"""The datapath's link watcher in a scratch namespace: the kernel's filter passes only
deletions (a new veth, a link going up or down wake no one), a deleted veth is seen,
and so is a namespace that goes away with a veth of ours inside, the way a container
dies. The namespaces are removed by name, also on failure."""
from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import asyncio, json, select, subprocess, sys, time
from services.datapath.link_watch import LinkDeletions

ns, box = sys.argv[1], sys.argv[2]
watch = LinkDeletions()
def ip(*a):
    subprocess.run(["ip", *a], check=True)
def seen(wait=0.5):
    ready, _, _ = select.select([watch], [], [], wait)
    return bool(ready) and watch.read()
out = {}
ip("link", "add", "lw0", "type", "veth", "peer", "name", "lw1")
out["created"] = seen()
ip("link", "set", "lw0", "up"); ip("link", "set", "lw1", "up"); ip("link", "set", "lw0", "down")
out["up_down"] = seen()
ip("link", "del", "lw0")
t = time.monotonic(); out["deleted"] = seen(5); out["deleted_after_s"] = time.monotonic() - t
ip("link", "add", "lw2", "type", "veth", "peer", "name", "lw3")
ip("link", "set", "lw3", "netns", box)  # the move itself is a deletion here
out["moved"] = seen()
ip("netns", "del", box)  # the container's namespace goes, and lw2 with it
out["namespace_gone"] = seen(5)
out["lw2_left"] = "lw2" in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
watch.close()

async def on_the_loop():  # as the datapath waits: LinkDeletions.next on the event loop
    w = LinkDeletions()
    ip("link", "add", "lw4", "type", "veth", "peer", "name", "lw5")
    try:
        await asyncio.wait_for(w.next(), 0.5)
        woke_on_create = True
    except asyncio.TimeoutError:
        woke_on_create = False
    ip("link", "del", "lw4")
    t = time.monotonic()
    await asyncio.wait_for(w.next(), 5)
    w.close()
    return woke_on_create, time.monotonic() - t
out["loop_woke_on_create"], out["loop_deleted_after_s"] = asyncio.run(on_the_loop())
print(json.dumps(out))
"""


@pytest.fixture
def namespaces():
    made = [f"wlw-{secrets.token_hex(3)}", f"wlb-{secrets.token_hex(3)}"]
    for ns in made:
        subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        yield made
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)


def test_only_deletions_are_seen_and_a_dying_namespace_is_one(namespaces):
    ns, box = namespaces
    out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", SCRIPT, ns, box], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert seen["created"] is False and seen["up_down"] is False, seen  # filtered in the kernel
    assert seen["deleted"] is True and seen["deleted_after_s"] < 1.0, seen
    assert seen["moved"] is True, seen
    assert seen["namespace_gone"] is True and seen["lw2_left"] is False, seen
    assert seen["loop_woke_on_create"] is False and seen["loop_deleted_after_s"] < 1.0, seen
