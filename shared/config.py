"""The configuration, all of it: what `weave launch` was given, and each service's settings.

One documented structure with named default profiles, as memberlist's `Config`:
- `LaunchConfig`: the host's options, written by `weave launch` to
  `<state-dir>/launch.json` (mode 0600: it may hold the password). Field names follow
  Weave Net's flags, and the CLI takes its defaults from here.
- One settings class per service (`SETTINGS`): every tunable of that service, each
  field documented once, here. The field defaults are the `production` profile
  (Weave's and mesh's values); the class's `TEST` holds the `test` profile (slow timers
  shortened so end-to-end tests converge in seconds). Cores whose defaults are these
  values take them from here (e.g. `GossipSettings().heartbeat_s`), so each number is
  written once.
- `for_service` builds what one process runs with. The environment is read only here
  and in the `from_environment` of a settings class (STYLE.md 11): the supervisor's
  overrides for one process (`WEAVE_OVERRIDE_<FIELD>`, `weave restart SVC --FIELD`),
  `WEAVE_<SERVICE>_METRICS_PORT`, and the variables a field's description names.

tests/unit/test_config.py holds that every field is read by the code of the service it
belongs to, so a setting no code reads fails the tests.
"""
from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.durable import write_atomic
from shared.paths import DEFAULT_STATE_DIR, state_dir_from_env  # noqa: F401 (part of this module's API)
from shared.schemas.scope import MAX_BODY

LAUNCH_FILE = "launch.json"
_last_loaded: list = [None, None]  # [(path, inode, size, mtime_ns), LaunchConfig]: LaunchConfig.load
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
    merge_pages: bool = Field(False, description="Let the kernel merge identical memory pages of the stack's "
                              "processes (KSM, shared/memory.py): about a fifth less memory per host while the host's "
                              "ksmd runs, which costs CPU of its own. Not a Weave Net flag. Taken by the supervisor "
                              "(weave launch, --foreground: systemd, the Kubernetes DaemonSet's WEAVE_MERGE_PAGES=1), "
                              "whose processes inherit it; compose, which starts each service itself, does not.")
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

    RESTART_OVERRIDES: ClassVar[tuple[str, ...]] = ("datapath",)
    """Fields `weave restart SVC --FIELD VALUE` may change for one process: the
    supervisor passes each as WEAVE_OVERRIDE_<FIELD> (`override_environment`), and
    `for_service` applies it (`with_overrides`); compose passes the same variable."""

    @classmethod
    def override_environment(cls, overrides: Mapping[str, str]) -> dict[str, str]:
        """The environment that carries `overrides` to one service process. ValueError
        names a field that cannot be overridden."""
        wrong = sorted(set(overrides) - set(cls.RESTART_OVERRIDES))
        if wrong:
            raise ValueError(f"cannot override {', '.join(wrong)} at restart; only "
                             f"{', '.join(cls.RESTART_OVERRIDES)}")
        return {f"WEAVE_OVERRIDE_{field.upper()}": value for field, value in overrides.items()}

    def with_overrides(self, environ: Mapping[str, str]) -> "LaunchConfig":
        """This config with the overrides `environ` carries (an empty one: none).
        ValidationError for a value the field refuses."""
        updates = {field: value for field in self.RESTART_OVERRIDES
                   if (value := environ.get(f"WEAVE_OVERRIDE_{field.upper()}"))}
        if not updates:
            return self
        return type(self).model_validate({**self.model_dump(), **updates})

    def save(self) -> Path:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / LAUNCH_FILE
        write_atomic(path, self.model_dump_json(indent=2), 0o600)
        return path

    @classmethod
    def load(cls, state_dir: Path) -> "LaunchConfig":
        """The launch settings in `state_dir`. The file last loaded, unchanged since (the
        same inode, size and mtime: launch.json is only ever replaced whole), is not read
        again: a service forked from the supervisor finds the supervisor's copy, and so
        skips running the validation, and copying the pages that touches (issue 15)."""
        path = Path(state_dir) / LAUNCH_FILE
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
            if _last_loaded[0] == key:
                return _last_loaded[1]
            launch = cls.model_validate(json.load(f))
        _last_loaded[:] = [key, launch]
        return launch

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
    """What one service process runs with: the host's launch settings (with the
    supervisor's overrides for this process) and its own settings for the profile."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    service: str = Field(description="Service name.")
    launch: LaunchConfig = Field(description="The host's launch settings.")
    metrics_port: int = Field(description="127.0.0.1 port of /metrics and /healthz (0 = any free port).")
    settings: "ServiceSettings" = Field(description="This service's own tunables for the launch profile.")


class ServiceSettings(BaseModel):
    """Base of the per-service tunables, each field documented once, here. The field
    defaults are the `production` profile (Weave's and mesh's values, and why); `TEST`
    holds the `test` profile's changes (slow timers shortened so end-to-end tests
    converge in seconds); `from_environment` the few fields the environment sets."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    TEST: ClassVar[dict] = {}

    @classmethod
    def for_profile(cls, profile: Profile, environ: Mapping[str, str] | None = None) -> "ServiceSettings":
        values = {} if profile == "production" else dict(cls.TEST)
        values.update(cls.from_environment(environ or {}))
        return cls(**values)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> dict:
        """Fields the environment sets (named in their descriptions); none by default."""
        return {}


ServiceConfig.model_rebuild()
"""(Its `settings` field names ServiceSettings before the class exists: built here, at
import, rather than on first use. Otherwise each forked service built its validator
for itself, a schema generation that copied ~1.6 MB of the supervisor's pages into
every service: issue 15.)"""


class GossipSettings(ServiceSettings):
    gossip_interval_s: float = Field(30.0, description="Periodic gossip of every channel to random neighbours "
                                     "(mesh's defaultGossipInterval; repairs lost broadcasts).")
    heartbeat_s: float = Field(30.0, description="TCP heartbeat on every mesh connection; a connection silent "
                               "for twice this is dropped (mesh's TCPHeartbeat).")
    topology_defer_s: float = Field(1.0, description="Local topology changes are coalesced this long before "
                                    "they are broadcast (mesh).")
    TEST: ClassVar[dict] = {"gossip_interval_s": 5.0}


class IpamSettings(ServiceSettings):
    tick_s: float = Field(5.0, description="Retry of pending allocations and paxos proposals (Weave's "
                          "tickInterval).")
    container_died_s: float = Field(30.0, description="A dead container's addresses are freed after this "
                                    "(Weave's containerDiedTimeout).")
    gossip_interval_s: float = Field(30.0, description="Periodic full ring gossip to random neighbours (mesh's "
                                     "gossip interval; with it a lost broadcast costs up to this long).")
    max_waiting_requests: int = Field(4096, description="Requests held at once while they wait for a ring or "
                                      "space: far above a host's container churn, and bounded memory.")
    TEST: ClassVar[dict] = {"tick_s": 1.0, "container_died_s": 3.0, "gossip_interval_s": 5.0}


class DnsSettings(ServiceSettings):
    gossip_interval_s: float = Field(30.0, description="Periodic full gossip of entries to random neighbours "
                                     "(mesh's gossip interval).")
    tombstone_timeout_s: float = Field(1800.0, description="Tombstones of deleted names are kept this long "
                                       "(weaveDNS, 30 min).")
    resolv_conf: Path = Field(Path("/etc/resolv.conf"), description="The resolv.conf upstream servers are taken "
                              "from (Weave's --resolv-conf; environment WEAVE_DNS_RESOLV_CONF).")
    upstream_port: int = Field(53, description="Port of every resolv.conf server (the file has none; miekg uses "
                               "53). Tests change it.")
    upstream_timeout_s: float = Field(5.0, description="Wait per upstream server (Weave's DefaultClientTimeout).")
    upstream_udp_size: int = Field(4096, description="Largest upstream UDP reply read (Weave's udpBuffSize); a "
                                   "bigger one counts as a failure.")
    max_forwards: int = Field(512, description="Upstream exchanges in flight; past it a query gets SERVFAIL at "
                              "once (bounds memory when a flood asks for names we must forward).")
    max_tcp_clients: int = Field(128, description="TCP connections served at once; more are closed on accept.")
    tcp_idle_timeout_s: float = Field(10.0, description="A TCP client silent this long is dropped (frees its "
                                      "slot).")
    snapshot_delay_s: float = Field(1.0, description="Changes are written to the snapshot at most this often "
                                    "(coalesced; each is in the fsynced journal first).")
    TEST: ClassVar[dict] = {"gossip_interval_s": 5.0, "tombstone_timeout_s": 60.0}

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> dict:
        path = environ.get("WEAVE_DNS_RESOLV_CONF")
        return {"resolv_conf": Path(path)} if path else {}


class DatapathSettings(ServiceSettings):
    fast_heartbeat_s: float = Field(0.5, description="Sleeve heartbeat until the peer acknowledges one (weave's "
                                    "FastHeartbeat).")
    slow_heartbeat_s: float = Field(10.0, description="Sleeve heartbeat once established (weave's SlowHeartbeat); "
                                    "6 missed ones fail the connection's sleeve.")
    mac_expiry_s: float = Field(600.0, description="A learnt MAC unseen this long is forgotten (weave's MAC cache "
                                "maxAge: longer than ARP caches keep an entry); expiry passes run every tenth of it.")
    TEST: ClassVar[dict] = {}


class NpcSettings(ServiceSettings):
    resync_s: float = Field(30.0, description="The kernel's iptables and ipsets are read again and hand-made "
                            "damage repaired this often, even when nothing changed.")
    retry_initial_s: float = Field(0.2, description="First wait after a failed apply; doubles per failure.")
    retry_max_s: float = Field(10.0, description="Cap of that wait: a broken iptables is retried forever.")
    gossip_interval_s: float = Field(30.0, description="Periodic gossip of the whole policy store to random "
                                     "neighbours (mesh's gossip interval).")
    persist_delay_s: float = Field(0.5, description="Store writes caused by gossip and containers are coalesced "
                                   "this long (policy changes asked for are written at once).")
    allow_mcast: bool = Field(True, description="Multicast is allowed past policies (weave-npc --allow-mcast).")
    iptables_backend: Literal["nft", "legacy"] | None = Field(None, description="Force the iptables backend "
                                                              "(environment WEAVE_NPC_IPTABLES); None: detect.")
    kube_api: str | None = Field(None, description="Kubernetes API server to watch (environment WEAVE_NPC_KUBE_API, "
                                 "else the in-cluster KUBERNETES_SERVICE_HOST/PORT); None: no Kubernetes source.")
    kube_token_file: str = Field("/var/run/secrets/kubernetes.io/serviceaccount/token",
                                 description="The service account token for the API server.")
    kube_ca_file: str = Field("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
                              description="The API server's CA certificate.")
    kube_resync_s: float = Field(300.0, description="Kubernetes objects are listed again this often even while "
                                 "watches are healthy.")
    TEST: ClassVar[dict] = {"resync_s": 2.0, "retry_initial_s": 0.1, "retry_max_s": 1.0, "gossip_interval_s": 5.0,
                            "persist_delay_s": 0.1, "kube_resync_s": 30.0}

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> dict:
        values: dict = {}
        if environ.get("WEAVE_NPC_IPTABLES"):
            values["iptables_backend"] = environ["WEAVE_NPC_IPTABLES"]
        api = environ.get("WEAVE_NPC_KUBE_API")
        if not api and environ.get("KUBERNETES_SERVICE_HOST"):
            api = f"https://{environ['KUBERNETES_SERVICE_HOST']}:{environ.get('KUBERNETES_SERVICE_PORT', '443')}"
        if api:
            values["kube_api"] = api
        return values


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
    max_body_bytes: int = Field(MAX_BODY, description="Largest POSTed report body, as sent (gzipped or not): the "
                                "mesh's bound for a report (8 MiB).")
    max_control_body_bytes: int = Field(64 << 10, description="Largest `POST /api/control/...` body (a JSON map "
                                        "of a few arguments).")
    max_ws_frame_bytes: int = Field(1 << 20, description="Largest websocket message taken from a client or probe "
                                    "(control RPCs, pipe data); a larger one closes that websocket (1009).")
    control_timeout_s: float = Field(15.0, description="How long a control may take on the probe before the app "
                                     "answers with an error (a service restart takes a few seconds).")
    max_pipes: int = Field(32, description="Open pipes (terminals) at once.")
    pipe_connect_timeout_s: float = Field(60.0, description="A pipe whose two ends have not both connected by "
                                          "then is closed (Scope: 1 min).")
    ws_interval_s: float = Field(1.0, description="Websocket update interval without `?t=` (Scope's "
                                 "websocketLoop).")
    ws_min_interval_s: float = Field(0.1, description="Shortest `?t=` honoured: a client cannot make the app "
                                     "render in a loop.")
    max_websockets: int = Field(256, description="Open topology websockets at most (each renders once per "
                                "interval).")
    TEST: ClassVar[dict] = {}


class DockerPluginSettings(ServiceSettings):
    reconnect_s: float = Field(2.0, description="Wait before the event stream is opened again after the engine went "
                               "away (a restarting dockerd).")
    TEST: ClassVar[dict] = {}


SETTINGS: dict[str, type[ServiceSettings]] = {
    "gossip": GossipSettings, "ipam": IpamSettings, "dns": DnsSettings,
    "datapath": DatapathSettings, "npc": NpcSettings, "scope-probe": ScopeProbeSettings,
    "scope-app": ScopeAppSettings, "docker-plugin": DockerPluginSettings}
"""Each service's settings class: with LaunchConfig, the whole configuration."""


def profile(name: Profile) -> dict[str, ServiceSettings]:
    """A named profile, every service's settings (memberlist's DefaultLANConfig and
    friends): `production` or `test`, without the environment."""
    return {service: cls.for_profile(name) for service, cls in SETTINGS.items()}


# Loopback ports of each service's /metrics. gossip's is Weave Net's status port
# (6782, which also serves /status there); npc's is weave-npc's 6781; the others are
# ours, chosen next to Weave's range and outside nats' defaults.
METRICS_PORTS: dict[str, int] = {"gossip": 6782, "npc": 6781, "ipam": 6790, "dns": 6791, "datapath": 6792,
                                 "scope-probe": 6793, "scope-app": 6794, "docker-plugin": 6795}


def for_service(service: str, launch: LaunchConfig, environ: Mapping[str, str] | None = None) -> ServiceConfig:
    """What `service` runs with: `launch` with the supervisor's overrides, its metrics
    port and its settings for the launch profile. `environ` None: os.environ."""
    env = os.environ if environ is None else environ
    launch = launch.with_overrides(env)
    port = METRICS_PORTS[service]
    override = env.get(f"WEAVE_{service.upper().replace('-', '_')}_METRICS_PORT")
    if override is not None:
        port = int(override)
    return ServiceConfig(service=service, launch=launch, metrics_port=port,
                         settings=SETTINGS[service].for_profile(launch.profile, env))


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
