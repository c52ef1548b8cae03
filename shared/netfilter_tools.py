"""Running the host's netfilter tools (iptables-{nft,legacy}[-save|-restore], ipset)
from Python, for every service that sets rules: npc (its policy chains) and the
datapath (weaver's NAT/FORWARD rules, the fastpath's source filter).

Backend: rules must live where the host's other rules are read, so the backend is the
one already holding WEAVE-NPC chains, else the one with more rules (kube's
iptables-wrapper heuristic), else nft (Debian's default `iptables`). Blocking.
"""
from __future__ import annotations

import enum
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass

COMMAND_TIMEOUT_S = 60.0


class Backend(str, enum.Enum):
    NFT = "nft"
    LEGACY = "legacy"


@dataclass(frozen=True)
class RunResult:
    returncode: int
    stdout: str
    stderr: str


Runner = Callable[[Sequence[str], str | None], RunResult]
"""Runs argv with `stdin` text; the real one is `run_command`, tests pass a twin."""


def run_command(argv: Sequence[str], stdin: str | None = None) -> RunResult:
    """Never raises: a missing tool or a timeout is exit status 127 with the reason."""
    try:
        proc = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return RunResult(127, "", f"{argv[0]}: {exc}")
    return RunResult(proc.returncode, proc.stdout, proc.stderr)


def detect_backend(run: Runner = run_command) -> Backend:
    counts = {}
    for backend in (Backend.LEGACY, Backend.NFT):
        out = run([f"iptables-{backend.value}-save"], None)
        if out.returncode != 0:
            counts[backend] = -1
            continue
        if ":WEAVE-NPC " in out.stdout:
            return backend
        counts[backend] = sum(1 for line in out.stdout.splitlines() if line.startswith("-A "))
    return Backend.LEGACY if counts[Backend.LEGACY] > counts[Backend.NFT] else Backend.NFT
