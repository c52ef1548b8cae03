"""The multi-host testbed: hosts up with healthy stacks, reachable underlay, faults, and
nothing left after down, twice in a row."""
from __future__ import annotations

import subprocess
from pathlib import Path

from shared.config import LaunchConfig
from tests.e2e.procs import wait_all_dead
from weavectl.supervisor import services_for


def test_testbed_up_and_down_twice(testbed_factory):
    tb = testbed_factory()
    for _ in range(2):
        tb.up(3)
        status = tb.status()
        assert [h["underlay"] for h in status["hosts"]] == ["192.168.77.1", "192.168.77.2", "192.168.77.3"]
        assert sorted(status["namespaces"]) == sorted([f"{tb.prefix}-wire"] + [f"{tb.prefix}-h{i}" for i in (1, 2, 3)])
        for h in ("h1", "h2", "h3"):
            ps = tb.weave(h, "ps-services")
            expected = {"nats", *services_for(LaunchConfig.load(Path(tb.host(h).state_dir)))}
            assert {line.split()[0] for line in ps.stdout.splitlines()[2:] if " healthy " in line} == expected, \
                ps.stdout
        assert tb.exec("h1", ["ping", "-c1", "-W2", "192.168.77.3"]).returncode == 0

        # faults: a cut link, then a blocked port
        tb.cut("h3")
        assert tb.exec("h1", ["ping", "-c1", "-W1", "192.168.77.3"]).returncode != 0
        tb.restore("h3")
        assert tb.exec("h1", ["ping", "-c1", "-W2", "192.168.77.3"]).returncode == 0

        pids = [int(p) for ns in status["namespaces"] for p in
                subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()]
        assert pids, "the hosts run processes"
        tb.down()
        assert tb.namespaces() == []
        assert not tb.root.exists()
        assert wait_all_dead(pids) == []


def test_block_port_between_two_hosts(testbed_factory):
    tb = testbed_factory()
    tb.up(2, launch=False)
    server = subprocess.Popen(["ip", "netns", "exec", f"{tb.prefix}-h2", "python3", "-c",
                               "import socket;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
                               "s.bind(('0.0.0.0',7000));s.listen();import time;time.sleep(60)"])
    try:
        probe = ["python3", "-c", "import socket;socket.create_connection(('192.168.77.2',7000),timeout=1)"]
        import time
        deadline = time.monotonic() + 5
        while tb.exec("h1", probe).returncode != 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tb.exec("h1", probe).returncode == 0
        tb.block("h1", "h2", "tcp", 7000)
        assert tb.exec("h1", probe).returncode != 0
        tb.unblock("h1", "h2", "tcp", 7000)
        assert tb.exec("h1", probe).returncode == 0
    finally:
        server.kill()
        server.wait()


def test_exec_in_unknown_target_is_an_error(testbed_factory):
    from weavectl.testbed import TestbedError
    import pytest

    tb = testbed_factory()
    tb.up(1, launch=False)
    with pytest.raises(TestbedError, match="no host"):
        tb.exec("h7", ["true"])
    with pytest.raises(TestbedError, match="no container"):
        tb.exec("h1c9", ["true"])


def test_docker_engines_come_and_go_with_the_testbed(testbed_factory):
    """`up --docker`: a dockerd per host, in the host's network namespace, each seeing its
    own /run/docker/plugins; `exec` talks to the host's engine; `down` leaves no engine,
    container process, cgroup or mount."""
    import os
    from pathlib import Path

    from weavectl.testbed import weave_bin

    tb = testbed_factory()
    tb.up(2, launch=False, docker=True)
    engines = [tb.engine(h) for h in tb.hosts]
    pids = [e.pid() for e in engines]
    assert all(pids), pids
    for h, pid in zip(tb.hosts, pids):
        assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/var/run/netns/{h.ns}").st_ino
    (engines[0].plugin_dir / "marker").write_text("h1")
    assert Path(f"/proc/{pids[0]}/root/run/docker/plugins/marker").read_text() == "h1"
    assert not Path(f"/proc/{pids[1]}/root/run/docker/plugins/marker").exists(), "each engine its own plugin dir"
    out = subprocess.run([weave_bin(), "testbed", "--root", str(tb.root), "--prefix", tb.prefix, "exec", "h2", "--",
                          "docker", "info", "--format", "{{.DockerRootDir}}"], capture_output=True, text=True)
    assert out.stdout.strip() == str(engines[1].dir / "data"), out.stderr
    tb.load_image("busybox")
    run = tb.exec("h1", ["docker", "run", "-d", "weave-busybox", "sleep", "600"])
    assert run.returncode == 0, run.stderr
    inner = int(tb.exec("h1", ["docker", "inspect", "-f", "{{.State.Pid}}", run.stdout.strip()]).stdout)
    tb.down()
    assert wait_all_dead(pids + [inner], timeout=10) == []
    assert not list(Path("/sys/fs/cgroup").glob(f"*/{tb.prefix}-h*-docker"))
    assert str(tb.root) not in Path("/proc/self/mountinfo").read_text()
    assert not tb.root.exists() and not any(e.exec_root.exists() for e in engines)
