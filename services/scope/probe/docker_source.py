"""Where the Docker reporter's inputs come from (the shell's reading side), only where
the host runs a Docker engine (LaunchConfig.docker_host):
- every container of the engine, inspected (shared/docker.py, aiodocker), polled as
  often as the router's status; an engine that does not answer leaves the last answer;
- the network namespaces of the running ones (so the walker visits their processes),
  read in the poll's thread;
- at each spy, which walked process belongs to which container (blocking: its cgroup,
  cached per pid and start time; or its network namespace).
"""
from __future__ import annotations

import asyncio
import logging
import os

from services.scope.probe.docker import container_of_cgroup
from services.scope.probe.walker import ProcessSample
from shared.docker import API_VERSION, DockerContainer, list_containers

log = logging.getLogger(__name__)


class DockerSource:
    def __init__(self, url: str, proc_root: str = "/proc") -> None:
        self.url, self.proc_root = url, proc_root
        self.containers: list[DockerContainer] = []
        self.netns: dict[int, str] = {}
        """Network namespace inode -> id of the running containers with one of their own."""
        self._cgroups: dict[tuple[int, int], str | None] = {}
        self._client = None

    async def poll_forever(self, interval_s: float) -> None:
        import aiodocker

        self._client = aiodocker.Docker(url=self.url, api_version=API_VERSION)
        try:
            while True:
                await self.poll()
                await asyncio.sleep(interval_s)
        finally:
            await self._client.close()

    async def poll(self) -> None:
        try:
            self.containers = await list_containers(self._client, all=True)
        except Exception as exc:  # the engine is away: keep the last answer
            log.debug("no container list from Docker: %s", exc)
            return
        self.netns = await asyncio.to_thread(self._namespaces, self.containers)

    def _namespaces(self, containers: list[DockerContainer]) -> dict[int, str]:
        host = _inode(f"{self.proc_root}/self/ns/net")
        out = {}
        for c in containers:
            inode = _inode(f"{self.proc_root}/{c.pid}/ns/net") if c.running else 0
            if inode and inode != host:
                out[inode] = c.id
        return out

    def pids(self, samples: list[ProcessSample]) -> dict[int, str]:
        """Blocking: pid -> container id of the walked processes that are a container's."""
        known = {c.id for c in self.containers if c.running}
        out, seen = {}, {}
        for s in samples:
            key = (s.pid, s.start_ticks)
            cid = self.netns.get(s.netns)
            if cid is None:
                if key not in self._cgroups:
                    self._cgroups[key] = container_of_cgroup(_read(f"{self.proc_root}/{s.pid}/cgroup"), known)
                cid = self._cgroups[key]
            seen[key] = self._cgroups.get(key)
            if cid is not None:
                out[s.pid] = cid
        self._cgroups = seen
        return out


def _inode(path: str) -> int:
    try:
        return os.stat(path).st_ino
    except OSError:
        return 0


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""
