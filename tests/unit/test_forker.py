"""The supervisor forks its processes from its own (weavectl/forkserver.py): a child
keeps nothing of the supervisor it must not (descriptors, signal handlers, tracer
provider, the span it was started in), exit codes come back as asyncio gives them, and
the supervisor runs no thread of its own. Run in a process of its own, as the
supervisor is (forking pytest itself would copy pytest)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

SERVICE = '''
import json, os, signal, sys, threading
from opentelemetry import trace, context

def main():
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[name] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass
    print(json.dumps({
        "fds": fds, "argv": sys.argv, "env": os.environ.get("WHO"),
        "comm": open("/proc/self/comm").read().strip(),
        "threads": threading.active_count(),
        "provider_set": trace._TRACER_PROVIDER is not None,
        "in_span": trace.get_current_span().get_span_context().is_valid,
        "sigterm_default": signal.getsignal(signal.SIGTERM) == signal.SIG_DFL,
        "wakeup_fd": signal.set_wakeup_fd(-1),
    }), flush=True)
    if os.environ.get("DIE"):
        os.kill(os.getpid(), signal.SIGKILL)
'''

SUPERVISOR = '''
import asyncio, json, os, socket, sys, threading
sys.path.insert(0, {tmp!r})
from weavectl import forkserver
from shared.tracing import setup_tracing

async def main(forks):
    forks.start()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(15, lambda: None)  # as the supervisor's loop has
    read_end, write_end = os.pipe()  # as `weave launch`'s ready pipe
    sock = socket.create_server(("127.0.0.1", 0))  # as the bus connection
    provider = setup_tracing("supervisor", host="h", trace_dir={tmp!r})
    out = {{}}
    with provider.get_tracer("t").start_as_current_span("restart gossip"):
        svc = await forks.spawn("fake", "fakesvc", {{"WHO": "fake"}}, {tmp!r} + "/fake.log")
    out["service_code"] = await svc.wait()
    killed = await forks.spawn("dies", "fakesvc", {{"WHO": "x", "DIE": "1"}}, {tmp!r} + "/dies.log")
    out["killed_code"] = await killed.wait()
    real, forkserver._leave_the_supervisor = forkserver._leave_the_supervisor, lambda: 1 / 0
    broken = await forks.spawn("broken", "fakesvc", {{"WHO": "x"}}, {tmp!r} + "/broken.log")
    out["broken_code"] = await broken.wait()  # ends there, never back in this loop
    forkserver._leave_the_supervisor = real
    prog = await forks.spawn_exec(["/bin/sh", "-c", "echo $WHO; exit 3"], {{"WHO": "sh"}}, {tmp!r} + "/sh.log")
    out["exec_code"] = await prog.wait()
    os.close(write_end)
    out["pipe_eof"] = os.read(read_end, 1) == b""  # no child kept the write end
    out["threads"] = sorted(t.name for t in threading.enumerate())
    out["pipe"] = os.readlink(f"/proc/self/fd/{{read_end}}")
    out["sock"] = os.readlink(f"/proc/self/fd/{{sock.fileno()}}")
    print(json.dumps(out), flush=True)
    return 0

sys.exit(forkserver.serve(lambda forks: asyncio.run(main(forks)), []))
'''


def test_a_forked_service_leaves_the_supervisor_behind(tmp_path: Path):
    (tmp_path / "fakesvc.py").write_text(textwrap.dedent(SERVICE))
    script = SUPERVISOR.format(tmp=str(tmp_path))
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 1, lines  # one supervisor: no child went on with its loop
    sup = json.loads(lines[0])
    assert sup["service_code"] == 0 and sup["killed_code"] == -9 and sup["exec_code"] == 3
    assert sup["broken_code"] == 1 and "ZeroDivisionError" in run.stderr
    assert sup["pipe_eof"]
    assert sup["threads"] == ["MainThread"]  # its spans go out from its loop: no export thread either

    child = json.loads((tmp_path / "fake.log").read_text().strip().splitlines()[-1])
    inherited = {fd: target for fd, target in child["fds"].items() if int(fd) > 2}
    # nothing of the supervisor's: its pipe, socket, loop descriptors all point at /dev/null now
    assert sup["pipe"] not in inherited.values() and sup["sock"] not in inherited.values()
    assert all(t == "/dev/null" or t.startswith("/proc/") for t in inherited.values()), inherited  # (its listing)
    assert child["argv"] == ["fakesvc"] and child["env"] == "fake" and child["comm"] == "weave-fake"
    assert child["threads"] == 1  # no span-export thread of the supervisor's
    assert not child["provider_set"]  # its setup_tracing installs its own
    assert not child["in_span"]  # not inside the supervisor's "restart" span
    assert child["sigterm_default"] and child["wakeup_fd"] == -1
    assert (tmp_path / "sh.log").read_text() == "sh\n"
