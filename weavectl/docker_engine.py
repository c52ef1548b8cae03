"""One Docker engine (Debian's docker.io dockerd) per testbed host.

Each engine runs inside its host's network namespace and in a mount namespace of its
own, with every path under the host's testbed dir `<root>/h<N>/docker/`:

    data/      --data-root (images, containers, volumes; containerd's state)
    plugins/   bind-mounted on /run/docker/plugins inside the engine's mount namespace
    docker.sock, docker.pid, dockerd.log, cgroup parent /<prefix>-h<N>-docker

but --exec-root (containerd's sockets, the shims', the sandboxes' netns files) is
`/run/weave-tb/<prefix>-h<N>`: unix socket paths are limited to 104-108 bytes and
containerd's debug socket under a test's temporary root went past that. It is removed
at stop like the rest.

Why this shape:
- `nsenter --net=/var/run/netns/<host>`, not `ip netns exec`: the latter remounts /sys
  for the new namespace, which hides the cgroup mounts dockerd needs.
- Docker finds legacy plugins only at fixed paths (/run/docker/plugins for sockets; no
  flag moves them, `--exec-root` does not), so with one engine per host each engine
  needs its own view of that directory: `unshare --mount` gives the engine a mount
  namespace whose root is a slave of the machine's (it sees new mounts such as
  /var/run/netns entries, and its own mounts never reach the machine's namespace),
  made shared again inside (so Compose's `propagation: rshared` bind mounts work), with
  `plugins/` bound on /run/docker/plugins. The host's weave stack listens there
  (`weave launch --docker-plugin-dir <root>/h<N>/docker/plugins`).
- Every mount dockerd and its containers make lives in that namespace and goes away
  with its last process; every container process lives under the cgroup parent, so
  teardown finds them by pid there. Nothing is left in the machine's namespaces.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
EXEC_ROOTS = Path("/run/weave-tb")
START_TIMEOUT_S = 60.0
STOP_GRACE_S = 20.0
DOCKERD = "dockerd"

# Run inside the engine's fresh mount namespace: $1 is the plugins dir, the rest is dockerd's argv.
_MOUNT_SCRIPT = ('set -e; mount --make-rslave /; mount --make-rshared /; mkdir -p /run/docker/plugins; '
                 'mount --bind "$1" /run/docker/plugins; shift; exec "$@"')


class EngineError(Exception):
    """The engine did not start (the message ends with its log's last lines)."""


class Engine:
    """The Docker engine of one testbed host (module docstring)."""

    def __init__(self, host_dir: Path, netns: str, cgroup: str) -> None:
        self.dir = Path(host_dir) / "docker"
        self.netns = netns
        self.cgroup = cgroup.strip("/")
        self.exec_root = EXEC_ROOTS / netns

    # -- paths -------------------------------------------------------------------------
    @property
    def socket(self) -> Path:
        return self.dir / "docker.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def plugin_dir(self) -> Path:
        return self.dir / "plugins"

    @property
    def pidfile(self) -> Path:
        return self.dir / "docker.pid"

    @property
    def log(self) -> Path:
        return self.dir / "dockerd.log"

    def argv(self) -> list[str]:
        return [DOCKERD, "--data-root", str(self.dir / "data"), "--exec-root", str(self.exec_root),
                "-H", self.url, "--pidfile", str(self.pidfile), "--cgroup-parent", f"/{self.cgroup}",
                "--exec-opt", "native.cgroupdriver=cgroupfs", "--userland-proxy=false", "--log-level", "warn"]

    # -- life cycle ----------------------------------------------------------------------
    def start(self, timeout: float = START_TIMEOUT_S) -> int:
        """Start dockerd and wait until it answers; returns its pid."""
        if shutil.which(DOCKERD) is None:
            raise EngineError("dockerd is not installed: apt-get install docker.io (scripts/install-deps.sh)")
        for sub in ("data", "plugins"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self.exec_root.mkdir(parents=True, exist_ok=True)
        argv = ["nsenter", f"--net=/var/run/netns/{self.netns}", "unshare", "--mount", "--propagation",
                "unchanged", "sh", "-c", _MOUNT_SCRIPT, "dockerd-ns", str(self.plugin_dir), *self.argv()]
        with open(self.log, "ab") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        self.wait_ready(proc, timeout)
        return proc.pid

    def wait_ready(self, proc: subprocess.Popen, timeout: float) -> None:
        from shared.docker import DockerUnavailable, run

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise EngineError(f"dockerd in {self.netns} exited with {proc.returncode}: {self._tail()}")
            if self.socket.exists():
                try:
                    run(self.url, lambda c: c.version())
                    return
                except DockerUnavailable:
                    pass
            time.sleep(0.1)
        raise EngineError(f"dockerd in {self.netns} did not answer within {timeout:g} s: {self._tail()}")

    def pid(self) -> int:
        """dockerd's pid, 0 when it is not running."""
        try:
            pid = int(self.pidfile.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return 0
        return pid if cmdline.startswith(DOCKERD.encode()) else 0

    def stop(self) -> None:
        """Stop dockerd (it stops its containers), kill by pid whatever is left under
        its cgroup parent, remove the cgroups and every file. Idempotent."""
        pid = self.pid()
        if pid:
            os.kill(pid, signal.SIGTERM)
            if not _wait_gone([pid], STOP_GRACE_S):
                os.kill(pid, signal.SIGKILL)
                _wait_gone([pid], 5)
        self._kill_cgroup()
        self._remove_cgroups()
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self.exec_root, ignore_errors=True)

    def _kill_cgroup(self) -> None:
        pids = cgroup_pids(self.cgroup)
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _wait_gone(pids, 5)

    def _remove_cgroups(self) -> None:
        for controller in _controllers():
            top = controller / self.cgroup
            if not top.is_dir():
                continue
            for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) + [top]:
                try:
                    d.rmdir()
                except OSError:
                    pass

    def _tail(self, lines: int = 6) -> str:
        try:
            return " | ".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _controllers() -> list[Path]:
    try:
        return [p for p in CGROUP_ROOT.iterdir() if p.is_dir()]
    except OSError:
        return []


def cgroup_pids(cgroup: str) -> list[int]:
    """Every process under /<cgroup> in any cgroup hierarchy (v1 or v2)."""
    roots = [c / cgroup for c in _controllers()] + [CGROUP_ROOT / cgroup]
    pids: set[int] = set()
    for top in roots:
        if not top.is_dir():
            continue
        for procs in top.rglob("cgroup.procs"):
            try:
                pids.update(int(p) for p in procs.read_text().split())
            except OSError:
                pass
    return sorted(pids)


def _wait_gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [p for p in pids if Path(f"/proc/{p}").exists() and not _zombie(p)]
        if not pids:
            return True
        time.sleep(0.05)
    return False


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False
