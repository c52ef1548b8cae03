"""Scope's node ids (report/id.go): how a node's id is built from what identifies it,
and parsed back. Parsers return None where Scope's return ok=false.

- host `<hostname>;<host>`; container `<docker id>;<container>`; and so on for every
  single-component kind (`<id>;<tag>`, the tags in `TAGS`);
- process `<hostname>;<pid>`;
- endpoint `<scope>;<address>;<port>` and address `<scope>;<address>`, where the scope
  is the host id for loopback addresses (with `-<netns inode>` when the walker knows
  the namespace) and for addresses in the probe's local networks, and empty otherwise;
- overlay peer `#<peer name>` (weave; Scope's weave prefix is empty) or
  `#docker_peer_<name>`.
"""
from __future__ import annotations

import ipaddress
from typing import Iterable

SCOPE_DELIM = ";"
EDGE_DELIM = "|"
WEAVE_OVERLAY_PEER_PREFIX = ""
DOCKER_OVERLAY_PEER_PREFIX = "docker_peer_"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Scope topology name -> the tag of its single-component ids (some differ from the name).
TAGS = {
    "host": "host",
    "container": "container",
    "container_image": "container_image",
    "pod": "pod",
    "service": "service",
    "deployment": "deployment",
    "replica_set": "replica_set",
    "daemon_set": "daemonset",
    "stateful_set": "statefulset",
    "cron_job": "cronjob",
    "job": "job",
    "namespace": "namespace",
    "ecs_task": "ecs_task",
    "swarm_service": "swarm_service",
    "persistent_volume": "persistent_volume",
    "persistent_volume_claim": "persistent_volume_claim",
    "storage_class": "storage_class",
    "volume_snapshot": "volume_snapshot",
    "volume_snapshot_data": "volume_snapshot_data",
}


def _split2(text: str) -> tuple[str, str] | None:
    head, sep, tail = text.partition(SCOPE_DELIM)
    return (head, tail) if sep else None


# ---------------------------------------------------------------- single component

def make_single_component_id(topology: str, ident: str) -> str:
    """`<ident>;<tag>` for a topology of `TAGS` (KeyError for any other)."""
    return f"{ident}{SCOPE_DELIM}<{TAGS[topology]}>"


def parse_single_component_id(topology: str, node_id: str) -> str | None:
    """The ident of a `<ident>;<tag>` id of that topology, or None."""
    parts = _split2(node_id)
    if parts is None or parts[1] != f"<{TAGS[topology]}>":
        return None
    return parts[0]


def make_host_node_id(hostname: str) -> str:
    return make_single_component_id("host", hostname)


def parse_host_node_id(node_id: str) -> str | None:
    return parse_single_component_id("host", node_id)


def make_container_node_id(container_id: str) -> str:
    return make_single_component_id("container", container_id)


def parse_container_node_id(node_id: str) -> str | None:
    return parse_single_component_id("container", node_id)


def make_container_image_node_id(image_id: str) -> str:
    return make_single_component_id("container_image", image_id)


def parse_container_image_node_id(node_id: str) -> str | None:
    return parse_single_component_id("container_image", node_id)


# ---------------------------------------------------------------- process

def make_process_node_id(hostname: str, pid: int | str) -> str:
    return f"{hostname}{SCOPE_DELIM}{pid}"


def parse_process_node_id(node_id: str) -> tuple[str, str] | None:
    """(hostname, pid) of a process id, or None."""
    return _split2(node_id)


# ---------------------------------------------------------------- endpoint, address

def _parse_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Go's net.ParseIP: an IPv4 or IPv6 literal (no zone), IPv4-mapped seen as IPv4."""
    if "%" in address:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_loopback(address: str) -> bool:
    ip = _parse_ip(address)
    return ip is not None and ip.is_loopback


def address_scope(host_id: str, namespace_id: str, address: str,
                  local_networks: Iterable[Network] = ()) -> str:
    """The scope part of an endpoint or address id (Scope's makeAddressID): the host id
    for an address in `local_networks`; for a loopback address the host id, plus
    `-<namespace_id>` when one is given; "" for any other address."""
    ip = _parse_ip(address)
    if ip is None:
        return ""
    if any(ip.version == net.version and ip in net for net in local_networks):
        return host_id
    if ip.is_loopback:
        return f"{host_id}-{namespace_id}" if namespace_id else host_id
    return ""


def make_endpoint_node_id(host_id: str, namespace_id: str, address: str, port: int | str,
                          local_networks: Iterable[Network] = ()) -> str:
    """`<scope>;<address>;<port>`, the scope as `address_scope` gives it."""
    scope = address_scope(host_id, namespace_id, address, local_networks)
    return f"{scope}{SCOPE_DELIM}{address}{SCOPE_DELIM}{port}"


def make_scoped_endpoint_node_id(scope: str, address: str, port: int | str) -> str:
    return f"{scope}{SCOPE_DELIM}{address}{SCOPE_DELIM}{port}"


def parse_endpoint_node_id(node_id: str) -> tuple[str, str, str] | None:
    """(scope, address, port) of an endpoint id (the scope may be ""), or None. The port
    is everything after the second delimiter, as in Scope."""
    first = _split2(node_id)
    if first is None:
        return None
    rest = _split2(first[1])
    if rest is None:
        return None
    return first[0], rest[0], rest[1]


def make_address_node_id(host_id: str, address: str,
                         local_networks: Iterable[Network] = ()) -> str:
    return f"{address_scope(host_id, '', address, local_networks)}{SCOPE_DELIM}{address}"


def parse_address_node_id(node_id: str) -> tuple[str, str] | None:
    """(scope, address) of an address id, or None."""
    return _split2(node_id)


# ---------------------------------------------------------------- overlay, ECS

def make_overlay_node_id(peer_name: str, prefix: str = WEAVE_OVERLAY_PEER_PREFIX) -> str:
    """`#<prefix><peer name>`; weave peers (prefix "") are `#<peer name>`."""
    return f"#{prefix}{peer_name}"


def parse_overlay_node_id(node_id: str) -> tuple[str, str] | None:
    """(prefix, peer name) of an overlay id, or None when it does not start with '#'."""
    if not node_id.startswith("#"):
        return None
    rest = node_id[1:]
    if rest.startswith(DOCKER_OVERLAY_PEER_PREFIX):
        return DOCKER_OVERLAY_PEER_PREFIX, rest[len(DOCKER_OVERLAY_PEER_PREFIX):]
    return WEAVE_OVERLAY_PEER_PREFIX, rest


def make_ecs_service_node_id(cluster: str, service_name: str) -> str:
    return f"{cluster}{SCOPE_DELIM}{service_name}"


def parse_ecs_service_node_id(node_id: str) -> tuple[str, str] | None:
    """(cluster, service name); old `<name>;<ecs_service>` ids give ("unknown", name)."""
    parts = _split2(node_id)
    if parts is None:
        return None
    if parts[1] == "<ecs_service>":
        return "unknown", parts[0]
    return parts


# ---------------------------------------------------------------- any id

def parse_node_id(node_id: str) -> tuple[str, str] | None:
    """(id, tag) split at the first delimiter, or None."""
    return _split2(node_id)


def node_id_type(node_id: str) -> str | None:
    """The kind an id names by its shape (Scope's NodeIDType): the tag of a
    `<x>;<tag>` id, "endpoint" when what follows the first delimiter starts with a
    digit, else None."""
    parts = _split2(node_id)
    if parts is None:
        return None
    tag = parts[1]
    if len(tag) >= 2 and tag[0] == "<" and tag[-1] == ">":
        return tag[1:-1]
    if tag[:1].isdigit() and tag[0] in "0123456789":
        return "endpoint"
    return None
