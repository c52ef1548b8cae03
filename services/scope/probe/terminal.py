"""A shell on a pseudo-terminal, for the `host_exec` and `docker_exec_container`
controls (Scope's probe/host/controls.go and probe/docker/controls.go run `pty.Start`).

The shell runs in a new session with the pty as its controlling terminal (`setsid
--ctty`), so job control and Ctrl-C work; in a container's network namespace through
`nsenter --net=<its netns>` (a weave-py container is a network namespace: an `ip netns`
name, a pid or a path, as `weave attach` takes it). The master side is non-blocking and
read by the event loop (`add_reader`); reads are at most `READ_BYTES` (one pipe
message). `close()` kills the session and closes the master; it is idempotent.
"""
from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import signal
import struct
import subprocess
import termios

READ_BYTES = 4096
ENV = {"TERM": "xterm-256color", "HOME": "/root", "LANG": "C.UTF-8",
       "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}


def shell() -> str:
    return shutil.which("bash") or "/bin/sh"


def netns_path(container_id: str) -> str:
    """Where a container's network namespace is, from the id `weave attach` was given."""
    if container_id.isdigit():
        return f"/proc/{container_id}/ns/net"
    if container_id.startswith("/"):
        return container_id
    return f"/run/netns/{container_id}"


def host_argv() -> list[str]:
    return ["setsid", "--ctty", shell(), "-i"]


def container_argv(container_id: str) -> list[str]:
    return ["setsid", "--ctty", "nsenter", f"--net={netns_path(container_id)}", "--", shell(), "-i"]


class Terminal:
    def __init__(self, argv: list[str], rows: int = 24, cols: int = 80) -> None:
        """Starts `argv` on a new pty (OSError if it cannot)."""
        master, slave = os.openpty()
        try:
            self.resize(rows, cols, fd=slave)
            self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=ENV, cwd="/",
                                         close_fds=True)
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        self.master = master
        self.closed = False

    def resize(self, rows: int, cols: int, fd: int | None = None) -> None:
        fcntl.ioctl(self.master if fd is None else fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def write(self, data: bytes) -> None:
        """Keystrokes to the shell (what does not fit now is dropped: a pty's input
        buffer holds 4 KiB, more than a person types between two reads)."""
        try:
            os.write(self.master, data)
        except (BlockingIOError, OSError):
            pass

    async def read(self) -> bytes:
        """The next output; b"" once the shell has exited."""
        loop = asyncio.get_running_loop()
        while not self.closed:
            try:
                return os.read(self.master, READ_BYTES)
            except BlockingIOError:
                ready = loop.create_future()
                loop.add_reader(self.master, lambda: ready.done() or ready.set_result(None))
                try:
                    await ready
                finally:
                    loop.remove_reader(self.master)
            except OSError:  # EIO: every slave side is closed, the shell is gone
                return b""
        return b""

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            asyncio.get_running_loop().remove_reader(self.master)
        except RuntimeError:  # no loop running (tests): nothing registered
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.kill()
        self.proc.wait()
        os.close(self.master)
