"""Scope's node keys, as far as the app's render reads them (Scope's report/map_keys.go;
node ids are `services.scope.ids`)."""
from __future__ import annotations

from services.scope import ids

# latest keys
HOST_NODE_ID = "host_node_id"
CONTROL_PROBE_ID = "control_probe_id"
PID = "pid"
NAME = "name"
COPY_OF = "copy_of"
HOST_NAME = "host_name"
SCOPE_VERSION = "host_scope_version"
LOCAL_NETWORKS = "local_networks"  # a set on host and overlay nodes
REVERSE_DNS_NAMES = "reverse_dns_names"  # a set on endpoints
DOES_NOT_MAKE_CONNECTIONS = "does_not_make_connections"
DOCKER_CONTAINER_ID = "docker_container_id"
DOCKER_CONTAINER_NAME = "docker_container_name"
DOCKER_CONTAINER_HOSTNAME = "docker_container_hostname"
DOCKER_CONTAINER_STATE = "docker_container_state"
DOCKER_CONTAINER_PORTS = "docker_container_ports"
DOCKER_CONTAINER_IPS_WITH_SCOPES = "docker_container_ips_with_scopes"
DOCKER_IS_IN_HOST_NETWORK = "docker_is_in_host_network"
DOCKER_IMAGE_ID = "docker_image_id"
DOCKER_IMAGE_NAME = "docker_image_name"
DOCKER_IMAGE_TAG = "docker_image_tag"
DOCKER_IMAGE_SIZE = "docker_image_size"
DOCKER_IMAGE_VIRTUAL_SIZE = "docker_image_virtual_size"
DOCKER_LABEL_PREFIX = "docker_label_"
DOCKER_IMAGE_LABEL_PREFIX = "docker_image_label_"
DOCKER_ENV_PREFIX = "docker_env_"
STATE_DELETED = "deleted"
RUNNING_STATES = ("running", "restarting", "paused")
WEAVE_PEER_NICK_NAME = "weave_peer_nick_name"

# report topologies (the core's TOPOLOGY_SPECS names)
ENDPOINT, PROCESS, CONTAINER, CONTAINER_IMAGE = "endpoint", "process", "container", "container_image"
HOST, OVERLAY, POD = "host", "overlay", "pod"


def host_id_of(latest: dict) -> str:
    """Scope's ExtractHostID: the hostname in a node's `host_node_id` ("" without one)."""
    entry = latest.get(HOST_NODE_ID)
    return (ids.parse_host_node_id(entry[1]) or "") if entry is not None else ""
