"""A nats-server of its own on a free loopback port, for tests and benchmarks (a host's
stack runs its nats-server under the supervisor instead): started, waited for, stopped
by its pid, and startable again on the same port (to see clients reconnect)."""
from __future__ import annotations

import secrets
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from weavectl.stack_files import nats_server_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalNatsServer:
    def __init__(self, conf_dir: Path | None = None, *, token: bool = True) -> None:
        self.port = free_port()
        self.token = secrets.token_hex(16) if token else ""
        self.url = f"nats://127.0.0.1:{self.port}"
        self._tmp = None if conf_dir is not None else tempfile.TemporaryDirectory(prefix="nats")
        self.conf = Path(conf_dir if conf_dir is not None else self._tmp.name) / "nats.conf"
        auth = f'authorization {{ token: "{self.token}" }}\n' if token else ""
        self.conf.write_text(f'listen: "127.0.0.1:{self.port}"\n{auth}')
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    def start(self, timeout: float = 10.0) -> "LocalNatsServer":
        """Start it and return once its port answers (RuntimeError if it does not)."""
        self.proc = subprocess.Popen([nats_server_path(), "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"nats-server did not start on port {self.port}") from None
                time.sleep(0.01)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> "LocalNatsServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
