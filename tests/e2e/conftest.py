"""End-to-end fixtures: real namespaces, real processes. Everything made here is removed
here, by name (namespaces) and by pid (processes inside them)."""
from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import pytest

from weavectl.testbed import Testbed, weave_bin

if os.geteuid() != 0:
    raise RuntimeError("the e2e tests need root (network namespaces); run 'make test' as root")


class Netns:
    """One scratch network namespace for a test, with `weave` run inside it."""

    def __init__(self, name: str, state_dir: Path) -> None:
        self.name, self.state_dir = name, state_dir

    def run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.name, *argv], capture_output=True, text=True,
                              timeout=timeout)

    def weave(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return self.run(weave_bin(), "--state-dir", str(self.state_dir), *args, timeout=timeout)

    def pids(self) -> list[int]:
        out = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]


@pytest.fixture
def netns(tmp_path):
    name = f"wtest-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    ns = Netns(name, tmp_path / "state")
    yield ns
    ns.weave("stop", timeout=30)
    Testbed._kill_namespace_pids(name)
    subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def testbed_factory(tmp_path):
    made: list[Testbed] = []

    def make(prefix: str | None = None) -> Testbed:
        tb = Testbed(tmp_path / f"tb{len(made)}", prefix or f"wte{secrets.token_hex(2)}")
        made.append(tb)
        return tb

    yield make
    for tb in made:
        tb.down()
