"""Every bus subject is built here; no other module pastes subject strings.

Shapes (ARCHITECTURE.md, "The bus"):
- `weave.<service>.<verb>`: a request that one service answers (`weave.ipam.allocate`).
- `weave.events.<topic>`: a fact anyone may follow (`weave.events.topology`).
- `weave.mesh.<channel>.out|in`: gossip between a channel's owner and the gossip process.
  `out` carries what the owner wants sent on the mesh; `in` what the mesh delivered.
- `weave.supervisor.<verb>`: the host's process supervisor (ps, restart, stop).
"""
from __future__ import annotations

import re

SERVICES: tuple[str, ...] = ("gossip", "ipam", "dns", "datapath", "npc", "scope-probe", "scope-app",
                             "docker-plugin")
"""Every service process of a host, by bus name (`weave.<name>.*`). The Scope pair's
modules are `services.scope.probe.service` and `services.scope.app.service`; the
Docker plugin's `services.docker_plugin.service` (it runs only where a Docker engine is)."""
SUPERVISOR = "supervisor"

# A subject token: no dots, wildcards or whitespace (NATS rules), not empty.
_TOKEN = re.compile(r"^[A-Za-z0-9_\-]+$")


def _token(kind: str, value: str) -> str:
    if not _TOKEN.match(value):
        raise ValueError(f"invalid {kind} for a bus subject: {value!r}")
    return value


KUBE_PEERS = "kube-peers"
"""The Kubernetes add-on's peer manager (`weave kube-peers run`, started by the
DaemonSet's launch script beside the supervisor, not by it): it serves
`weave.kube-peers.http` (its section of `weave status`, its readiness)."""


def request(service: str, verb: str) -> str:
    """Subject of a request served by `service` (one of SERVICES, the supervisor, or kube-peers)."""
    if service not in SERVICES and service not in (SUPERVISOR, KUBE_PEERS):
        raise ValueError(f"unknown service {service!r}; expected one of {', '.join(SERVICES)}")
    return f"weave.{service}.{_token('verb', verb)}"


def health(service: str) -> str:
    """Every service answers this with a HealthReply."""
    return request(service, "health")


def supervisor(verb: str) -> str:
    return request(SUPERVISOR, verb)


def event(topic: str) -> str:
    return f"weave.events.{_token('topic', topic)}"


def mesh_out(channel: str) -> str:
    """Owner -> gossip process: gossip to send on `channel`."""
    return f"weave.mesh.{_token('channel', channel)}.out"


def mesh_in(channel: str) -> str:
    """Gossip process -> owner: gossip received on `channel`."""
    return f"weave.mesh.{_token('channel', channel)}.in"


def service_wildcard(service: str) -> str:
    """Every request subject of one service (for diagnostics and tests)."""
    return request(service, "x")[: -len("x")] + "*"


def matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: `*` is one token, `>` (last) is one or more tokens."""
    p, s = pattern.split("."), subject.split(".")
    for i, tok in enumerate(p):
        if tok == ">":
            return len(s) > i
        if i >= len(s) or (tok != "*" and tok != s[i]):
            return False
    return len(p) == len(s)
