"""Docker containers by name or ID in the CLI (`weave attach|detach|ps|dns-add`), as
Weave's script resolves them through the Docker engine.

A CONTAINER argument is a Docker container when it is not a network namespace the
datapath can open by itself (an `ip netns` name, a path, a pid) and this host's
engine knows it (DOCKER_HOST, else launch.json's docker_host, else the default socket).
Without an engine every argument is passed on as before. The engine is asked through
shared/docker.py (aiodocker).
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from shared.docker import DockerContainer, DockerUnavailable, engine_url, inspect, list_containers, run
from shared.paths import state_dir_from_env
from weavectl.errors import LaunchError

NETNS_DIR = "/var/run/netns"


def engine(args: argparse.Namespace) -> str | None:
    """DOCKER_HOST (the user's word for where their engine is), else launch.json's
    docker_host (None when launched --no-docker), else the default socket if there."""
    if os.environ.get("DOCKER_HOST"):
        return os.environ["DOCKER_HOST"]
    state_dir = getattr(args, "state_dir", None) or state_dir_from_env()
    try:
        launch = json.loads((Path(state_dir) / "launch.json").read_text())
    except (OSError, ValueError):
        return engine_url()
    return launch.get("docker_host")  # None: launched --no-docker, or no engine was there


def is_namespace(ref: str) -> bool:
    return ref.isdigit() or ref.startswith("/") or os.path.exists(os.path.join(NETNS_DIR, ref))


def resolve(args: argparse.Namespace, ref: str) -> DockerContainer | None:
    """The Docker container `ref` names, or None when it is not one (module docstring)."""
    url = None if is_namespace(ref) or ref.startswith("weave:") else engine(args)
    if url is None:
        return None
    try:
        return run(url, lambda client: inspect(client, ref))
    except DockerUnavailable:
        return None


def running(args: argparse.Namespace, ref: str) -> DockerContainer | None:
    """As `resolve`, but a Docker container that is not running is an error."""
    c = resolve(args, ref)
    if c is not None and not c.running:
        raise LaunchError(f"container {ref} is not running", f"start it first: docker start {ref}")
    return c


def names(args: argparse.Namespace) -> dict[str, str]:
    """Full id -> name of every container of this host's engine ({} without one)."""
    url = engine(args)
    if url is None:
        return {}
    try:
        return {c.id: c.name for c in run(url, lambda client: list_containers(client, all=True))}
    except DockerUnavailable:
        return {}
