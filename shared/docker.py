"""A host's Docker engine, read through aiodocker (the Docker Engine API client we use
everywhere: the CLI, the docker-plugin service, Scope's probe): where the engine is,
and what it says about a container, as plain values.

Contracts:
- `engine_url(explicit)`: the engine to talk to: `explicit` (launch's --docker-host),
  else DOCKER_HOST, else unix:///var/run/docker.sock when that socket exists; None
  when there is no engine here (Docker features are then simply off).
- `DockerContainer.from_inspect` reads the JSON of GET /containers/{id}/json (Docker's
  "inspect") and nothing else: a pure function, tested on recorded answers.
- Every call may raise `DockerUnavailable` (no engine answers) or return None for a
  container the engine does not know; nothing here retries.
"""
from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")

DEFAULT_SOCKET = "/var/run/docker.sock"
API_VERSION = "v1.41"
"""Docker 20.10's API (Debian 12's docker.io); newer engines still serve it."""


class DockerUnavailable(Exception):
    """No Docker engine answered at `url`."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"no Docker engine at {url}: {reason}")
        self.url, self.reason = url, reason


def engine_url(explicit: str | None = None, env: dict | None = None) -> str | None:
    """The engine's URL (module docstring), or None when there is none here."""
    env = os.environ if env is None else env
    if explicit:
        return explicit if "://" in explicit else f"unix://{explicit}"
    if env.get("DOCKER_HOST"):
        return env["DOCKER_HOST"]
    return f"unix://{DEFAULT_SOCKET}" if os.path.exists(DEFAULT_SOCKET) else None


@dataclass(frozen=True)
class Endpoint:
    """A container's place on one Docker network (inspect's NetworkSettings.Networks)."""

    network_id: str
    endpoint_id: str
    cidr: str
    """ip/len Docker gave it there ('' when none)."""
    mac: str


@dataclass(frozen=True)
class DockerContainer:
    id: str
    """The full 64-hex id."""
    name: str
    """Without Docker's leading '/'."""
    image: str
    """As the user named it (Config.Image), e.g. weave-busybox:1."""
    image_id: str
    labels: dict[str, str]
    state: str
    """created, running, paused, restarting, removing, exited, dead."""
    pid: int
    """Its first process (0 when not running)."""
    hostname: str
    domainname: str
    network_mode: str
    networks: dict[str, Endpoint] = field(default_factory=dict)
    """Docker network name -> where the container is on it."""
    command: str = ""
    created: str = ""

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def running(self) -> bool:
        return self.state == "running" and self.pid > 0

    @property
    def netns_path(self) -> str:
        """Its network namespace, as `weave attach` takes one."""
        return f"/proc/{self.pid}/ns/net"

    @classmethod
    def from_inspect(cls, data: dict) -> "DockerContainer":
        config = data.get("Config") or {}
        state = data.get("State") or {}
        settings = data.get("NetworkSettings") or {}
        networks = {}
        for net_name, net in (settings.get("Networks") or {}).items():
            ip, plen = net.get("IPAddress") or "", net.get("IPPrefixLen") or 0
            networks[net_name] = Endpoint(net.get("NetworkID") or "", net.get("EndpointID") or "",
                                          f"{ip}/{plen}" if ip else "", net.get("MacAddress") or "")
        cmd = config.get("Cmd") or []
        return cls(id=data["Id"], name=(data.get("Name") or "").lstrip("/"), image=config.get("Image") or "",
                   image_id=data.get("Image") or "", labels=dict(config.get("Labels") or {}),
                   state=state.get("Status") or "", pid=int(state.get("Pid") or 0),
                   hostname=config.get("Hostname") or "", domainname=config.get("Domainname") or "",
                   network_mode=(data.get("HostConfig") or {}).get("NetworkMode") or "", networks=networks,
                   command=" ".join(cmd) if isinstance(cmd, list) else str(cmd), created=data.get("Created") or "")


def _client(url: str):
    import aiodocker

    return aiodocker.Docker(url=url, api_version=API_VERSION)


async def with_engine(url: str, work: Callable[["object"], Awaitable[T]]) -> T:
    """Run `work(client)` with a client of the engine at `url`, closed afterwards;
    DockerUnavailable when the engine cannot be reached."""
    import aiodocker
    import aiohttp

    client = _client(url)
    try:
        return await work(client)
    except (aiohttp.ClientConnectionError, FileNotFoundError, ConnectionError) as exc:
        raise DockerUnavailable(url, str(exc) or type(exc).__name__) from None
    except aiodocker.DockerError as exc:
        if exc.status >= 500:
            raise DockerUnavailable(url, exc.message) from None
        raise
    finally:
        await client.close()


async def inspect(client, ref: str) -> DockerContainer | None:
    """The container named or identified (id or unique id prefix) by `ref`, or None."""
    import aiodocker

    try:
        container = await client.containers.get(ref)
    except aiodocker.DockerError as exc:
        if exc.status == 404:
            return None
        raise
    return DockerContainer.from_inspect(container._container)


async def list_containers(client, all: bool = False) -> list[DockerContainer]:
    """Every container (running ones unless `all`), inspected."""
    summaries = await client.containers.list(all=all)
    found = await asyncio.gather(*(inspect(client, c.id) for c in summaries))
    return [c for c in found if c is not None]


async def network_driver(client, network_id: str) -> str:
    """The driver of a Docker network ('' when it is gone)."""
    import aiodocker

    try:
        info = await client.networks.get(network_id)
        return (await info.show()).get("Driver", "")
    except aiodocker.DockerError:
        return ""


def run(url: str, work: Callable[["object"], Awaitable[T]]) -> T:
    """`with_engine` for synchronous callers (the CLI)."""
    return asyncio.run(with_engine(url, work))
