"""Configuration: what `weave launch` was given, and one settings class per service.

`weave launch` writes `LaunchConfig` to `<state-dir>/launch.json` (mode 0600: it may
hold the password). Each service process reads it once at start (the environment is
read only here, STYLE.md 11) and builds its own settings with `for_service`. Option
names follow Weave Net's flags. Profiles: `production` keeps Weave Net's timers;
`test` shortens the slow ones so e2e tests converge quickly.
"""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.durable import write_atomic
from shared.paths import DEFAULT_STATE_DIR, state_dir_from_env  # noqa: F401 (part of this module's API)

LAUNCH_FILE = "launch.json"
TOKEN_FILE = "bus.token"
Profile = Literal["production", "test"]


class LaunchConfig(BaseModel):
    """Everything a host's stack was launched with. Field names follow Weave Net's flags."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    state_dir: Path = Field(DEFAULT_STATE_DIR, description="Where the host keeps state, logs and traces.")
    name: str | None = Field(None, description="Peer name (MAC form); None = derived on first start and kept.")
    nickname: str = Field(default_factory=socket.gethostname, description="Peer nickname (Weave: hostname).")
    host: str = Field("0.0.0.0", description="Address the mesh listens on (Weave --host).")
    port: int = Field(6783, description="Mesh TCP port and sleeve UDP port (Weave --port).")
    password: str | None = Field(None, description="Mesh password (Weave --password / WEAVE_PASSWORD).")
    peers: tuple[str, ...] = Field((), description="Peers to connect to, host[:port].")
    ipalloc_range: str = Field("10.32.0.0/12", description="IPAM universe (Weave --ipalloc-range).")
    ipalloc_init: str | None = Field(None, description="consensus[=N] | seed=<names> | observer.")
    no_dns: bool = Field(False, description="Do not run weaveDNS (Weave --no-dns).")
    no_npc: bool = Field(False, description="Do not run the network policy controller (as a plain Weave Net "
                         "`weave launch`, which has no weave-npc): no NetworkPolicy, no iptables on bridged frames.")
    no_scope: bool = Field(False, description="Do not run Weave Scope's probe and app on this host (`weave launch "
                           "--no-scope`: exactly the stack without Scope).")
    scope_listen: str = Field("127.0.0.1:4040", description="ip:port of the Scope app's HTTP API and page (Scope's "
                              "--app.http.address). Loopback by default; any other address needs scope_token.")
    scope_targets: tuple[str, ...] = Field((), description="Other Scope apps the probe also POSTs every report to, "
                                           "host[:port] or http(s)://host[:port] (Scope's probe targets).")
    scope_token: str | None = Field(None, description="Scope token (--scope-token / WEAVE_SCOPE_TOKEN): when set, "
                                    "every request to the app needs it (a bearer header, the cookie /login sets, "
                                    "or a probe's `Authorization: Scope-Probe token=<token>`).")
    scope_controls: bool = Field(False, description="Let the Scope app run controls (detach a container, restart a "
                                 "service, a terminal into a container or the host). Needs scope_token.")
    dns_listen_address: str = Field("0.0.0.0:53", description="weaveDNS UDP+TCP address (Weave --dns-listen-address).")
    dns_domain: str = Field("weave.local.", description="weaveDNS domain (Weave --dns-domain).")
    dns_ttl: int = Field(1, description="TTL of weaveDNS answers, seconds (Weave --dns-ttl).")
    conn_limit: int = Field(200, description="Max mesh connections; 0 = unlimited (Weave --conn-limit).")
    no_discovery: bool = Field(False, description="Do not dial peers learnt from gossip (Weave --no-discovery).")
    trusted_subnets: tuple[str, ...] = Field((), description="CIDRs whose peers get unencrypted overlays.")
    datapath: Literal["sleeve", "fastpath", "auto"] = Field("auto", description="Overlays this host may use.")
    bus_port: int = Field(6785, description="Loopback port of this host's nats-server.")
    otlp_endpoint: str | None = Field(None, description="OTLP/HTTP collector; None = traces to state-dir files.")
    profile: Profile = Field("production", description="Timer profile: production or test.")
    docker_host: str | None = Field(None, description="The Docker engine of this host (unix:///var/run/docker.sock, "
                                    "or --docker-host): the docker-plugin service runs, the CLI resolves Docker "
                                    "container names and Scope reports Docker containers. None: no engine (or "
                                    "--no-docker).")
    docker_plugin_dir: str = Field("/run/docker/plugins", description="Where the Docker plugin's sockets are made "
                                   "(weave.sock, weavemesh.sock): the directory the engine looks in for plugins.")

    def save(self) -> Path:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / LAUNCH_FILE
        write_atomic(path, self.model_dump_json(indent=2), 0o600)
        return path

    @classmethod
    def load(cls, state_dir: Path) -> "LaunchConfig":
        with open(Path(state_dir) / LAUNCH_FILE) as f:
            return cls.model_validate(json.load(f))

    @property
    def bus_url(self) -> str:
        return f"nats://127.0.0.1:{self.bus_port}"

    def bus_token(self) -> str:
        return (self.state_dir / TOKEN_FILE).read_text().strip()

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def trace_dir(self) -> Path:
        return self.state_dir / "traces"


class ServiceConfig(BaseModel):
    """Settings every service has, plus its own (`settings`, one class per service)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    service: str = Field(description="Service name.")
    launch: LaunchConfig = Field(description="The host's launch settings.")
    metrics_port: int = Field(description="127.0.0.1 port of /metrics and /healthz (0 = any free port).")
    health_interval_s: float = Field(1.0, description="How often the supervisor may ask; informational.")
    settings: "ServiceSettings" = Field(description="This service's own tunables for the launch profile.")


class ServiceSettings(BaseModel):
    """Base of the per-service tunables. `production` keeps Weave Net's values (and says
    why); `test` shortens the slow timers so end-to-end tests converge in seconds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def for_profile(cls, profile: Profile) -> "ServiceSettings":
        return cls() if profile == "production" else cls(**cls.TEST)  # type: ignore[attr-defined]

    TEST: ClassVar[dict] = {}


class GossipSettings(ServiceSettings):
    gossip_interval_s: float = Field(30.0, description="Periodic full gossip (mesh defaultGossipInterval).")
    heartbeat_s: float = Field(30.0, description="TCP heartbeat; the read timeout is twice this (mesh).")
    topology_defer_s: float = Field(1.0, description="Local topology changes coalesced this long (mesh).")
    TEST: ClassVar[dict] = {"gossip_interval_s": 5.0}


class IpamSettings(ServiceSettings):
    tick_s: float = Field(5.0, description="Retry of pending allocations and paxos proposals (weave ipam).")
    gossip_interval_s: float = Field(30.0, description="Periodic full ring gossip (mesh default).")
    TEST: ClassVar[dict] = {"tick_s": 1.0, "gossip_interval_s": 5.0}


class DnsSettings(ServiceSettings):
    gossip_interval_s: float = Field(30.0, description="Periodic full gossip of entries (mesh default).")
    tombstone_purge_s: float = Field(1800.0, description="Tombstones kept this long (weaveDNS, 30 min).")
    upstream_timeout_s: float = Field(5.0, description="Wait for an upstream resolver (weaveDNS).")
    TEST: ClassVar[dict] = {"gossip_interval_s": 5.0, "tombstone_purge_s": 60.0}


class DatapathSettings(ServiceSettings):
    fast_heartbeat_s: float = Field(0.5, description="Sleeve heartbeat until established (weave sleeve).")
    slow_heartbeat_s: float = Field(10.0, description="Sleeve heartbeat once established (weave sleeve).")
    mac_expiry_s: float = Field(600.0, description="Learnt MACs forgotten after this (weave mac cache).")
    TEST: ClassVar[dict] = {}


class NpcSettings(ServiceSettings):
    resync_s: float = Field(60.0, description="Re-read iptables/ipset and repair drift this often.")
    gossip_interval_s: float = Field(30.0, description="Periodic full gossip of policies and pods.")
    TEST: ClassVar[dict] = {"resync_s": 2.0, "gossip_interval_s": 5.0}


class ScopeProbeSettings(ServiceSettings):
    spy_interval_s: float = Field(1.0, description="How often the probe reads /proc, sockets and conntrack (Scope's "
                                  "--probe.spy.interval, 1 s).")
    publish_interval_s: float = Field(3.0, description="How often it publishes a report (Scope's "
                                      "--probe.publish.interval, 3 s).")
    full_report_every: int = Field(3, description="Every Nth publish is a full report, the others deltas (Scope's "
                                   "ticksPerFullReport, 3).")
    weave_poll_s: float = Field(3.0, description="How often the router's /report and npc's blocked flows are asked "
                                "for (Scope polls weave status with a 5 s backoff; 3 s keeps each report fresh).")
    blocked_window_s: float = Field(15.0, description="Blocked flows this recent are reported (the app's window).")
    TEST: ClassVar[dict] = {}


class ScopeAppSettings(ServiceSettings):
    window_s: float = Field(15.0, description="Reports kept per probe and merged (Scope app's --app.window, 15 s).")
    TEST: ClassVar[dict] = {}


class DockerPluginSettings(ServiceSettings):
    reconnect_s: float = Field(2.0, description="Wait before the event stream is opened again after the engine went "
                               "away (a restarting dockerd).")
    TEST: ClassVar[dict] = {}


SETTINGS: dict[str, type[ServiceSettings]] = {
    "gossip": GossipSettings, "ipam": IpamSettings, "dns": DnsSettings,
    "datapath": DatapathSettings, "npc": NpcSettings, "scope-probe": ScopeProbeSettings,
    "scope-app": ScopeAppSettings, "docker-plugin": DockerPluginSettings}


# Loopback ports of each service's /metrics. gossip's is Weave Net's status port
# (6782, which also serves /status there); npc's is weave-npc's 6781; the others are
# ours, chosen next to Weave's range and outside nats' defaults.
METRICS_PORTS: dict[str, int] = {"gossip": 6782, "npc": 6781, "ipam": 6790, "dns": 6791, "datapath": 6792,
                                 "scope-probe": 6793, "scope-app": 6794, "docker-plugin": 6795}


def for_service(service: str, launch: LaunchConfig) -> ServiceConfig:
    port = METRICS_PORTS[service]
    override = os.environ.get(f"WEAVE_{service.upper().replace('-', '_')}_METRICS_PORT")
    if override is not None:
        port = int(override)
    return ServiceConfig(service=service, launch=launch, metrics_port=port,
                         settings=SETTINGS[service].for_profile(launch.profile))


def scope_exposure_problem(listen: str, token: str | None, controls: bool) -> str | None:
    """Why the Scope app must not start with these settings (None: it may). The app
    serves what every probe sees and, with controls, shells: any address other than
    loopback, and any control, needs a token."""
    import ipaddress

    host = listen.rpartition(":")[0].strip("[]")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not token and not loopback:
        return (f"--scope-listen {listen} is not a loopback address: it needs --scope-token "
                "(or WEAVE_SCOPE_TOKEN)")
    if controls and not token:
        return "--scope-controls needs --scope-token (or WEAVE_SCOPE_TOKEN)"
    return None
