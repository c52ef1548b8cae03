"""Node keys, metadata/metric/table templates and controls, as Scope's probe writes them.

Templates are Scope's JSON dicts in Go's field order (MetadataTemplate: id, label,
truncate, dataType, priority, from; MetricTemplate: id, label, format, group, priority;
TableTemplate: id, label, prefix, type, columns, fixedRows), zero values left out as Go's
`omitempty` does, priorities float64 as on the wire. Sources: weaveworks/scope
probe/host/reporter.go, probe/process/reporter.go, probe/docker/reporter.go and
container.go, probe/overlay/weave.go; the keys of ours (`weave_py_*`) are documented in
docs/scope.md.
"""
from __future__ import annotations

from typing import Any

# -- keys every reporter uses (report/map_keys.go, probe/host) ---------------------------
HOST_NODE_ID, CONTROL_PROBE_ID, ACTIVE_CONTROLS = "host_node_id", "control_probe_id", "active_controls"
PID, NAME, PPID, CMDLINE, THREADS = "pid", "name", "ppid", "cmdline", "threads"
PROCESS_CPU, PROCESS_MEMORY, OPEN_FILES = "process_cpu_usage_percent", "process_memory_usage_bytes", "open_files_count"
HOST_NAME, OS, KERNEL_VERSION, UPTIME, TIMESTAMP = "host_name", "os", "kernel_version", "uptime", "ts"
SCOPE_VERSION, LOCAL_NETWORKS = "host_scope_version", "local_networks"
HOST_CPU, HOST_MEMORY, LOAD1 = "host_cpu_usage_percent", "host_mem_usage_bytes", "load1"
HOST_EXEC = "host_exec"

CONTAINER_ID, CONTAINER_NAME = "docker_container_id", "docker_container_name"
CONTAINER_STATE, CONTAINER_STATE_HUMAN = "docker_container_state", "docker_container_state_human"
CONTAINER_HOSTNAME, CONTAINER_UPTIME = "docker_container_hostname", "docker_container_uptime"
CONTAINER_IPS, CONTAINER_IPS_WITH_SCOPES = "docker_container_ips", "docker_container_ips_with_scopes"
CONTAINER_NETWORKS, CONTAINER_CREATED = "docker_container_networks", "docker_container_created"
CONTAINER_CPU, CONTAINER_MEMORY = "docker_cpu_total_usage", "docker_memory_usage"
LABEL_PREFIX = "docker_label_"
WEAVE_MAC, WEAVE_DNS_HOSTNAME = "weave_mac_address", "weave_dns_hostname"

WEAVE_PEER_NAME, WEAVE_PEER_NICKNAME = "weave_peer_name", "weave_peer_nick_name"
WEAVE_VERSION, WEAVE_ENCRYPTION, WEAVE_PROTOCOL = "weave_version", "weave_encryption", "weave_protocol"
WEAVE_PEER_DISCOVERY, WEAVE_TARGET_COUNT = "weave_peer_discovery", "weave_target_count"
WEAVE_CONNECTION_COUNT, WEAVE_PEER_COUNT = "weave_connection_count", "weave_peer_count"
WEAVE_TRUSTED_SUBNETS = "weave_trusted_subnet_count"
WEAVE_IPAM_STATUS, WEAVE_IPAM_RANGE, WEAVE_IPAM_DEFAULT_SUBNET = (
    "weave_ipam_status", "weave_ipam_range", "weave_ipam_default_subnet")
WEAVE_DNS_DOMAIN, WEAVE_DNS_UPSTREAM, WEAVE_DNS_TTL, WEAVE_DNS_ENTRY_COUNT = (
    "weave_dns_domain", "weave_dns_upstream", "weave_dns_ttl", "weave_dns_entry_count")
WEAVE_PROXY_STATUS, WEAVE_PROXY_ADDRESS = "weave_proxy_status", "weave_proxy_address"
WEAVE_PLUGIN_STATUS, WEAVE_PLUGIN_DRIVER = "weave_plugin_status", "weave_plugin_driver"
WEAVE_CONNECTIONS_PREFIX = "weave_connections_multicolumn_table_"
WEAVE_CONN_CONNECTION, WEAVE_CONN_STATE, WEAVE_CONN_INFO = (
    "weave_connection_connection", "weave_connection_state", "weave_connection_info")
TABLE_KEY_SEPARATOR = "___"

# -- ours (docs/scope.md, "Keys Scope never had") -----------------------------------------
LINKS_PREFIX = "weave_py_links_table_"
LINK_PEER, LINK_OVERLAY, LINK_ENCRYPTED, LINK_MTU, LINK_STATE = (
    "weave_py_link_peer", "weave_py_link_overlay", "weave_py_link_encrypted", "weave_py_link_mtu",
    "weave_py_link_state")
LINK_OVERLAY_TO = "weave_py_overlay_to_"
"""`weave_py_overlay_to_<peer name>` on our own peer node: the overlay carrying that link."""
BLOCKED_PREFIX = "weave_py_blocked_table_"
BLOCKED_FLOW, BLOCKED_PROTOCOL, BLOCKED_COUNT, BLOCKED_WHEN = (
    "weave_py_blocked_flow", "weave_py_blocked_protocol", "weave_py_blocked_count", "weave_py_blocked_at")
BLOCKED = "weave_py_blocked"
"""On an Endpoint: 'true' when the connection from it was blocked by a NetworkPolicy."""
BLOCKED_TO = "weave_py_blocked_to"
"""Endpoint set: the endpoint ids its blocked connection attempts went to."""
BLOCKED_COUNT_KEY = "weave_py_blocked_count"
"""On our own peer node: blocked attempts in the window."""


def metadata(id: str, label: str, priority: float, *, from_: str = "latest", datatype: str = "",
             truncate: int = 0) -> dict[str, Any]:
    t: dict[str, Any] = {"id": id, "label": label}
    if truncate:
        t["truncate"] = truncate
    if datatype:
        t["dataType"] = datatype
    t["priority"] = float(priority)
    t["from"] = from_
    return t


def metric(id: str, label: str, priority: float, *, format: str = "", group: str = "") -> dict[str, Any]:
    t: dict[str, Any] = {"id": id, "label": label}
    if format:
        t["format"] = format
    if group:
        t["group"] = group
    t["priority"] = float(priority)
    return t


def table(id: str, label: str, *, prefix: str = "", type: str = "property-list",
          columns: list[dict[str, str]] | None = None, fixed_rows: dict[str, str] | None = None) -> dict[str, Any]:
    return {"id": id, "label": label, "prefix": prefix, "type": type, "columns": columns,
            "fixedRows": fixed_rows or {}}


def column(id: str, label: str, datatype: str = "") -> dict[str, str]:
    return {"id": id, "label": label, "dataType": datatype}


def _by_id(*templates: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["id"]: t for t in templates}


HOST_METADATA = _by_id(
    metadata(KERNEL_VERSION, "Kernel version", 1), metadata(UPTIME, "Uptime", 2, datatype="duration"),
    metadata(HOST_NAME, "Hostname", 11), metadata(OS, "OS", 12),
    metadata(LOCAL_NETWORKS, "Local networks", 13, from_="sets"), metadata(SCOPE_VERSION, "Scope version", 14))
HOST_METRICS = _by_id(
    metric(HOST_CPU, "CPU", 1, format="percent"), metric(HOST_MEMORY, "Memory", 2, format="filesize"),
    metric(LOAD1, "Load (1m)", 11, group="load"))
HOST_CONTROLS = {HOST_EXEC: {"id": HOST_EXEC, "human": "Exec shell", "icon": "fa fa-terminal", "rank": 0}}
# controls of ours and the docker ones we run (probe/controls.py): offered in reports
# only while this host's controls are on (`active_controls`)
RESTART_SERVICE, CONTAINER_EXEC, DETACH_CONTAINER = (
    "weave_py_restart_service", "docker_exec_container", "weave_py_detach_container")
HOST_CONTROLS_ON = {**HOST_CONTROLS, RESTART_SERVICE: {"id": RESTART_SERVICE, "human": "Restart a service",
                                                       "icon": "fa fa-refresh", "rank": 1}}
CONTAINER_CONTROLS = {
    CONTAINER_EXEC: {"id": CONTAINER_EXEC, "human": "Exec shell", "icon": "fa fa-terminal", "rank": 0},
    DETACH_CONTAINER: {"id": DETACH_CONTAINER, "human": "Detach from weave", "icon": "fa fa-chain-broken",
                       "rank": 1}}

PROCESS_METADATA = _by_id(
    metadata(PID, "PID", 1, datatype="number"), metadata(CMDLINE, "Command", 2),
    metadata(PPID, "Parent PID", 3, datatype="number"), metadata(THREADS, "# Threads", 4, datatype="number"))
PROCESS_METRICS = _by_id(
    metric(PROCESS_CPU, "CPU", 1, format="percent"), metric(PROCESS_MEMORY, "Memory", 2, format="filesize"),
    metric(OPEN_FILES, "Open files", 3, format="integer"))

CONTAINER_METADATA = _by_id(
    metadata(CONTAINER_ID, "ID", 1, truncate=12), metadata(CONTAINER_STATE_HUMAN, "State", 2),
    metadata(CONTAINER_UPTIME, "Uptime", 12), metadata(CONTAINER_IPS, "IPs", 14, from_="sets"),
    metadata(CONTAINER_CREATED, "Created", 16),
    metadata(WEAVE_MAC, "Weave MAC", 17), metadata(WEAVE_DNS_HOSTNAME, "Weave DNS Name", 18))
CONTAINER_METRICS = _by_id(
    metric(CONTAINER_CPU, "CPU", 1, format="percent"), metric(CONTAINER_MEMORY, "Memory", 2, format="filesize"))
CONTAINER_TABLES = _by_id(table(LABEL_PREFIX, "Docker Labels", prefix=LABEL_PREFIX, type=""))

OVERLAY_METADATA = _by_id(
    metadata(WEAVE_VERSION, "Version", 1), metadata(WEAVE_PROTOCOL, "Protocol", 2),
    metadata(WEAVE_PEER_NAME, "Name", 3), metadata(WEAVE_ENCRYPTION, "Encryption", 4),
    metadata(WEAVE_PEER_DISCOVERY, "Peer discovery", 5), metadata(WEAVE_TARGET_COUNT, "Targets", 6),
    metadata(WEAVE_PEER_COUNT, "Peers", 7), metadata(WEAVE_CONNECTION_COUNT, "Connections", 8),
    metadata(WEAVE_TRUSTED_SUBNETS, "Trusted subnets", 9, from_="sets"),
    metadata(BLOCKED_COUNT_KEY, "Blocked connections", 10))
OVERLAY_TABLES = _by_id(
    table("weave_ipam_table", "IPAM", fixed_rows={WEAVE_IPAM_STATUS: "Status", WEAVE_IPAM_RANGE: "Range",
                                                  WEAVE_IPAM_DEFAULT_SUBNET: "Default subnet"}),
    table("weave_dns_table", "DNS", fixed_rows={WEAVE_DNS_DOMAIN: "Domain", WEAVE_DNS_UPSTREAM: "Upstream",
                                                WEAVE_DNS_TTL: "TTL", WEAVE_DNS_ENTRY_COUNT: "Entries"}),
    table("weave_proxy_table", "Proxy", fixed_rows={WEAVE_PROXY_STATUS: "Status", WEAVE_PROXY_ADDRESS: "Address"}),
    table("weave_plugin_table", "Plugin", fixed_rows={WEAVE_PLUGIN_STATUS: "Status",
                                                      WEAVE_PLUGIN_DRIVER: "Driver name"}),
    table(WEAVE_CONNECTIONS_PREFIX, "", prefix=WEAVE_CONNECTIONS_PREFIX, type="multicolumn-table", columns=[
        column(WEAVE_CONN_CONNECTION, "Connections"), column(WEAVE_CONN_STATE, "State"),
        column(WEAVE_CONN_INFO, "Info")]),
    table("weave_connections_table_", "Connections", prefix="weave_connections_table_"),
    table(LINKS_PREFIX, "Links", prefix=LINKS_PREFIX, type="multicolumn-table", columns=[
        column(LINK_PEER, "Peer"), column(LINK_OVERLAY, "Overlay"), column(LINK_ENCRYPTED, "Encrypted"),
        column(LINK_MTU, "MTU", "number"), column(LINK_STATE, "State")]),
    table(BLOCKED_PREFIX, "Blocked by network policy", prefix=BLOCKED_PREFIX, type="multicolumn-table", columns=[
        column(BLOCKED_FLOW, "Connection"), column(BLOCKED_PROTOCOL, "Protocol"),
        column(BLOCKED_COUNT, "Packets", "number"), column(BLOCKED_WHEN, "Last")]))


def table_row(prefix: str, row_id: str, entries: dict[str, str]) -> dict[str, str]:
    """Latest entries of one multicolumn-table row (Scope's AddPrefixMulticolumnTable):
    `<prefix><row id>___<column id>` -> value."""
    return {f"{prefix}{row_id}{TABLE_KEY_SEPARATOR}{col}": value for col, value in entries.items()}
