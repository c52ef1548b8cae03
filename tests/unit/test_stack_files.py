"""nats-server's config as the launcher writes it (weavectl/stack_files.py), run by a
real nats-server."""
from __future__ import annotations

import socket
import subprocess
import time

from shared.config import LaunchConfig
from weavectl.launcher import _write_token
from weavectl.stack_files import NATS_MAX_CLOSED_CLIENTS, nats_server_path, write_nats_conf


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_nats_server_runs_with_the_written_config_and_keeps_few_closed_connections(tmp_path):
    cfg = LaunchConfig(state_dir=tmp_path, bus_port=_free_port())
    _write_token(tmp_path)
    conf = write_nats_conf(cfg)
    assert f"max_closed_clients: {NATS_MAX_CLOSED_CLIENTS}" in conf.read_text() and NATS_MAX_CLOSED_CLIENTS <= 64
    assert oct(conf.stat().st_mode & 0o777) == "0o600"  # it holds the token
    proc = subprocess.Popen([nats_server_path(), "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", cfg.bus_port), 0.5)
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode()  # a bad key stops nats-server
                assert time.monotonic() < deadline
                time.sleep(0.02)
        with sock:
            assert sock.recv(4096).startswith(b"INFO ")
            sock.sendall(b'CONNECT {"auth_token":"%s","verbose":false}\r\nPING\r\n' % cfg.bus_token().encode())
            assert b"PONG" in sock.recv(4096)
    finally:
        proc.kill()
        proc.wait()
