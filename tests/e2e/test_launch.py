"""`weave launch` on a host: the stack, its supervision, and a clean stop."""
from __future__ import annotations

import json
from pathlib import Path

from shared.config import LaunchConfig
from weavectl.supervisor import services_for
from tests.e2e.procs import wait_all_dead
from tests.e2e.procs import wait_until


def service_table(ns) -> dict[str, tuple[int, str]]:
    out = ns.weave("ps-services")
    assert out.returncode == 0, out.stderr
    rows = {}
    for line in out.stdout.splitlines()[2:]:
        name, pid, state, health = line.split()[:4]
        rows[name] = (int(pid) if pid != "-" else 0, health)
    return rows




def test_launch_supervise_restart_stop(netns):
    out = netns.weave("launch", "--name", "aa:00:00:00:00:42", "--nickname", "e2e")
    assert out.returncode == 0, out.stderr
    table = service_table(netns)
    assert set(table) == {"nats", *services_for(LaunchConfig(state_dir=netns.state_dir))}
    assert {"scope-probe", "gossip", "npc"} <= set(table)
    assert all(h == "healthy" for _, h in table.values())

    # every service serves Prometheus metrics on its loopback port
    metrics = netns.run("python3", "-c", "import urllib.request;print(urllib.request.urlopen("
                        "'http://127.0.0.1:6790/metrics').read().decode())")
    assert "process_resident_memory_bytes" in metrics.stdout

    # kill -9 one service: it comes back with a new pid; the others keep theirs
    victim = table["ipam"][0]
    netns.run("kill", "-9", str(victim))

    def restarted():
        t = service_table(netns)
        return t if t["ipam"][0] not in (0, victim) and t["ipam"][1] == "healthy" else None

    after = wait_until(restarted, what="ipam restart")
    for name, (pid, _) in table.items():
        if name != "ipam":
            assert after[name][0] == pid, f"{name} was disturbed"

    # restart on purpose
    out = netns.weave("restart", "dns")
    assert out.returncode == 0, out.stderr
    assert service_table(netns)["dns"][0] != after["dns"][0]

    # a second launch is refused with a reason
    again = netns.weave("launch")
    assert again.returncode == 1 and "already running" in again.stderr

    # stop: no process and no device left behind
    all_pids = [p for p, _ in service_table(netns).values()]
    out = netns.weave("stop")
    assert out.returncode == 0, out.stderr
    assert wait_all_dead(netns.pids()) == [], "a process outlived weave stop"
    assert wait_all_dead(all_pids) == []
    links = netns.run("ip", "-o", "link", "show").stdout.splitlines()
    assert [line.split(":")[1].strip() for line in links] == ["lo"]
    assert not (netns.state_dir / "processes.json").exists()


def test_cli_errors_are_one_line_with_hint(netns):
    out = netns.weave("ps-services")
    assert out.returncode == 1
    assert "not running" in out.stderr and "hint:" in out.stderr

    out = netns.weave("launch", "--conn-limit", "many")
    assert out.returncode == 2 and "invalid int value" in out.stderr

    assert netns.weave("launch", "--nickname", "e2e").returncode == 0
    out = netns.weave("restart", "router")
    assert out.returncode == 1 and "no service 'router'" in out.stderr


def test_supervisor_crash_leaves_nothing_after_stop(netns):
    assert netns.weave("launch").returncode == 0
    data = json.loads((netns.state_dir / "processes.json").read_text())
    netns.run("kill", "-9", str(data["supervisor"]))
    wait_until(lambda: not Path(f"/proc/{data['supervisor']}").exists(), what="supervisor gone")
    netns.weave("stop")
    assert wait_all_dead(netns.pids()) == []


def test_launch_that_cannot_become_healthy_names_the_service_and_leaves_nothing(netns):
    # weaveDNS on an address this namespace does not have: dns never becomes healthy
    out = netns.weave("launch", "--dns-listen-address", "10.99.0.1:53", "--launch-timeout", "4")
    assert out.returncode == 1, out
    assert "service dns did not become healthy within 4 s" in out.stderr, out.stderr
    assert "dns.log" in out.stderr  # the end of its log is shown
    assert wait_all_dead(netns.pids()) == [], "launch failed but left processes behind"
    assert not (netns.state_dir / "processes.json").exists()


def test_launch_reports_a_supervisor_that_dies_while_it_waits(netns):
    import signal
    import subprocess
    import time

    from weavectl.testbed import weave_bin

    cli = subprocess.Popen(["ip", "netns", "exec", netns.name, weave_bin(), "--state-dir", str(netns.state_dir),
                            "launch", "--dns-listen-address", "10.99.0.1:53", "--launch-timeout", "60"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pid_file = netns.state_dir / "supervisor.pid"
        wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), what="supervisor started")
        killed = time.monotonic()
        subprocess.run(["kill", "-9", pid_file.read_text().strip()], check=True)
        _, err = cli.communicate(timeout=30)
        waited = time.monotonic() - killed
    finally:
        if cli.poll() is None:
            cli.send_signal(signal.SIGKILL)
            cli.communicate()
    assert cli.returncode == 1 and "the supervisor exited during launch" in err, err
    assert waited < 10, f"the CLI took {waited:.1f} s to notice (its timeout was 60 s)"
    left = wait_all_dead(netns.pids())
    assert left == [], [Path(f"/proc/{p}/cmdline").read_bytes() for p in left if Path(f"/proc/{p}").exists()]


def test_services_carry_on_when_the_bus_server_dies(netns):
    """kill -9 nats-server: the supervisor starts it again and every service's bus client
    connects again by itself (shared/nats_client.py), re-subscribing: each answers its
    health request over the new server with the pid it had (none was restarted)."""
    out = netns.weave("launch", "--nickname", "e2e", "--no-scope")
    assert out.returncode == 0, out.stderr
    table = service_table(netns)
    netns.run("kill", "-9", str(table["nats"][0]))

    def back():
        try:
            t = service_table(netns)
        except AssertionError:  # the bus is not back yet
            return None
        return t if t["nats"][0] not in (0, table["nats"][0]) and all(h == "healthy" for _, h in t.values()) else None

    after = wait_until(back, what="nats-server restarted and every service healthy on it")
    assert {n: pid for n, (pid, _) in after.items() if n != "nats"} == \
        {n: pid for n, (pid, _) in table.items() if n != "nats"}, "a service was restarted"
    assert netns.weave("stop").returncode == 0
    assert wait_all_dead(netns.pids()) == []


def test_launch_is_parsed_by_the_supervisor_and_keeps_the_password_off_command_lines(netns):
    """`weave launch` hands its command line to the supervisor's process on a pipe: the
    CLI imports no pydantic (issue 15: its start-up CPU), and the password given with
    --password appears on no process's command line, not even the long-lived ones."""
    import sys

    from weavectl.testbed import weave_bin

    out = netns.run(sys.executable, "-X", "importtime", weave_bin(), "--state-dir", str(netns.state_dir),
                    "launch", "--nickname", "e2e", "--no-scope", "--password", "s3cret-on-no-cmdline")
    assert out.returncode == 0, out.stderr
    imported = [line.split("|")[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")]
    assert "weavectl.stack_files" in imported and "subprocess" in imported, imported  # the launch path is listed
    assert not [m for m in imported if m.startswith(("pydantic", "shared.config", "shared.schemas"))], imported
    assert "weave launched on e2e" in out.stdout
    cmdlines = [Path(f"/proc/{p}/cmdline").read_bytes() for p in netns.pids() if Path(f"/proc/{p}").exists()]
    assert any(b"weavectl.supervisor" in c for c in cmdlines) and len(cmdlines) >= 6, cmdlines
    pythons = [c.split(b"\0") for c in cmdlines if b"weavectl.supervisor" in c]  # the services are its forks
    assert len(pythons) >= 6 and all(argv[1] == b"-OO" for argv in pythons), pythons  # no docstrings, no asserts
    assert not [c for c in cmdlines if b"s3cret" in c], "the password is on a command line"
    assert json.loads((netns.state_dir / "launch.json").read_text())["password"] == "s3cret-on-no-cmdline"
    nats = json.loads((netns.state_dir / "processes.json").read_text())["processes"]["nats"]
    environ = Path(f"/proc/{nats}/environ").read_bytes().split(b"\0")
    assert b"GOGC=50" in environ and b"GOMAXPROCS=1" in environ  # its heap kept smaller, one P
    assert netns.weave("stop").returncode == 0
    assert wait_all_dead(netns.pids()) == []


def _merge_any(pid: int) -> str:
    stat = Path(f"/proc/{pid}/ksm_stat").read_text()
    return next(line.split(":")[1].strip() for line in stat.splitlines() if line.startswith("ksm_merge_any"))


def test_launch_merge_pages_marks_every_process_of_the_stack(netns):
    """`weave launch --merge-pages`: the supervisor, nats-server and every service (a
    restarted one too) let the kernel merge their identical pages; the launch says so
    when the host's ksmd is off; a launch without it leaves every process alone."""
    from shared.memory import KSM_RUN, merge_pages_problem

    out = netns.weave("launch", "--nickname", "e2e", "--no-scope", "--merge-pages")
    assert out.returncode == 0, out.stderr
    problem = merge_pages_problem()
    if not Path("/proc/self/ksm_stat").exists():  # an older kernel: launched, and told why nothing merges
        assert "note: --merge-pages:" in out.stderr and "kernel" in out.stderr
        assert netns.weave("stop").returncode == 0
        return
    assert (("note: --merge-pages:" in out.stderr) == (problem is not None)), (out.stderr, problem)
    if KSM_RUN.read_text().strip() != "1":
        assert "ksmd" in out.stderr
    table = service_table(netns)
    supervisor = int((netns.state_dir / "supervisor.pid").read_text())
    assert {name: _merge_any(pid) for name, (pid, _) in table.items()} == {name: "yes" for name in table}
    assert _merge_any(supervisor) == "yes"
    assert netns.weave("restart", "ipam").returncode == 0
    assert _merge_any(service_table(netns)["ipam"][0]) == "yes"
    assert netns.weave("stop").returncode == 0
    assert wait_all_dead(netns.pids()) == []

    out = netns.weave("launch", "--nickname", "e2e", "--no-scope")
    assert out.returncode == 0 and "note:" not in out.stderr, out.stderr
    assert {_merge_any(pid) for pid, _ in service_table(netns).values()} == {"no"}
    assert netns.weave("stop").returncode == 0
    assert wait_all_dead(netns.pids()) == []
