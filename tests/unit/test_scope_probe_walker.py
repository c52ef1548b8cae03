"""The /proc reading layer on this machine's real /proc: processes of the namespaces
asked for only, what is cached per (pid, start time), sockets mapped to their process
through fd links (read only while an inode is unknown), and a namespace read through
one of its processes. Children are started by the test and killed by pid."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from services.scope.probe.walker import ProcWalker

HOLDER = """
import socket, sys, time
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen()
cli = socket.create_connection(srv.getsockname()); acc, _ = srv.accept()
print(srv.getsockname()[1], cli.getsockname()[1], flush=True)
time.sleep(60)
"""


@pytest.fixture
def holder():
    """A child holding one loopback connection (both ends) in our namespace."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, "marker-arg"], stdout=subprocess.PIPE, text=True)
    server_port, client_port = map(int, proc.stdout.readline().split())
    yield proc, server_port, client_port
    proc.kill()
    proc.wait()


def test_walk_reads_our_namespace_and_caches_argv(holder):
    proc, _, _ = holder
    w = ProcWalker()
    me = w.netns_of("self")
    samples = {s.pid: s for s in w.walk({me})}
    child = samples[proc.pid]
    assert child.ppid == os.getpid() and child.name == sys.executable and child.netns == me
    assert child.cmdline.endswith(" marker-arg ") and child.threads == 1
    assert child.open_files >= 5 and child.open_files_limit > 0 and child.rss_bytes > 0
    assert w.processes == len(samples)
    cached = dict(w._static)
    assert (proc.pid, child.start_ticks) in cached
    assert {s.pid for s in w.walk({me + 1})} == set(), "no process lives in a namespace that does not exist"


def test_sockets_are_mapped_to_the_process_holding_them():
    """In a namespace of its own (unshare -n), so that no other process of this busy
    machine opens sockets between two walks and makes the walker look them up."""
    script = "import os\nos.system('ip link set lo up')\n" + HOLDER
    proc = subprocess.Popen(["unshare", "--net", sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        server_port, client_port = map(int, proc.stdout.readline().split())
        w = ProcWalker()
        theirs = w.netns_of(proc.pid)
        ns = w.sockets(theirs, w.walk({theirs}), proc.pid)
        conns = {(c.local_port, c.remote_port): c for c in ns.connections}
        server, client = conns[(server_port, client_port)], conns[(client_port, server_port)]
        assert ns.owners[server.inode] == ns.owners[client.inode] == proc.pid
        read = w.fd_links_read
        assert read > 0
        again = w.sockets(theirs, w.walk({theirs}), proc.pid)
        assert again.owners[server.inode] == proc.pid
        assert w.fd_links_read == read, "known sockets are not looked up again"
        w.forget_sockets(set())
        w.sockets(theirs, w.walk({theirs}), proc.pid)
        assert w.fd_links_read > read, "forgotten sockets are looked up again"
    finally:
        proc.kill()
        proc.wait()


def test_a_process_that_exits_is_dropped_from_the_caches(holder):
    proc, _, _ = holder
    w = ProcWalker()
    me = w.netns_of("self")
    w.walk({me})
    proc.kill()
    proc.wait()
    assert proc.pid not in {s.pid for s in w.walk({me})}
    assert not any(pid == proc.pid for pid, _ in w._static)


def test_another_namespace_is_read_through_its_own_process():
    """A child in a namespace of its own (unshare -n: it goes when the child does)."""
    script = "import os\nos.system('ip link set lo up')\n" + HOLDER
    proc = subprocess.Popen(["unshare", "--net", sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        server_port, client_port = map(int, proc.stdout.readline().split())
        w = ProcWalker()
        me, theirs = w.netns_of("self"), w.netns_of(proc.pid)
        assert theirs and theirs != me
        mine = w.walk({me})
        assert proc.pid not in {s.pid for s in mine}, "a process of another namespace is not ours"
        both = w.walk({me, theirs})
        assert proc.pid in {s.pid for s in both}
        ns = w.sockets(theirs, both, proc.pid)
        assert {(c.local_port, c.remote_port) for c in ns.connections} == {(server_port, client_port),
                                                                           (client_port, server_port)}
        assert set(ns.owners.values()) == {proc.pid}
        ours = w.sockets(me, both, "self")
        assert not any(c.local_port == server_port and c.remote_port == client_port for c in ours.connections)
    finally:
        proc.kill()
        proc.wait()


def test_walk_is_cheap_enough_for_every_second():
    w = ProcWalker()
    me = w.netns_of("self")
    w.walk({me})
    started = time.perf_counter()
    for _ in range(5):
        w.sockets(me, w.walk({me}), "self")
    per_spy = (time.perf_counter() - started) / 5
    assert per_spy < 0.25, f"a spy of this namespace took {per_spy * 1000:.0f} ms"
