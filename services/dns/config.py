"""Configuration of the dns service process, built once at start from the host's
LaunchConfig, the service's profile settings (`shared.config.DnsSettings`: Weave's
timers in production, short ones in the test profile) and the environment.

The environment is read here only (STYLE.md 11): `WEAVE_DNS_RESOLV_CONF` names the
resolv.conf to take upstream servers from (Weave's `--resolv-conf`; tests point it at a
file of their own).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from shared.config import DnsSettings, LaunchConfig

RESOLV_CONF_ENV = "WEAVE_DNS_RESOLV_CONF"
DEFAULT_RESOLV_CONF = Path("/etc/resolv.conf")


@dataclass(frozen=True)
class DnsConfig:
    listen_host: str
    listen_port: int
    domain: str
    ttl_s: int
    resolv_conf: Path
    gossip_interval_s: float = 30.0
    """Full state to random neighbours this often (mesh's gossip interval)."""
    tombstone_timeout_s: float = 1800.0
    """Tombstones are kept this long (Weave: 30 min)."""
    upstream_port: int = 53
    """Port of every resolv.conf server (the file has none; miekg uses 53). Tests change it."""
    upstream_timeout_s: float = 5.0
    """Per upstream server, as Weave's DefaultClientTimeout."""
    upstream_udp_size: int = 4096
    """Largest upstream UDP reply read (Weave's udpBuffSize); a bigger one counts as a failure."""
    max_forwards: int = 512
    """Upstream exchanges in flight; past it a query gets SERVFAIL at once (bounds memory
    when a flood asks for names we must forward)."""
    max_tcp_clients: int = 128
    """TCP connections served at once; more are closed on accept."""
    tcp_idle_timeout_s: float = 10.0
    """A TCP client silent this long is dropped (frees its slot)."""
    snapshot_delay_s: float = 1.0
    """Changes are written to the snapshot at most this often (coalesced)."""

    @property
    def address(self) -> str:
        """host:port as Weave prints it (/dns-address-port, /report Address)."""
        return f"{self.listen_host}:{self.listen_port}"

    @classmethod
    def from_launch(cls, launch: LaunchConfig, settings: DnsSettings | None = None,
                    env: Mapping[str, str] | None = None) -> "DnsConfig":
        """`settings`: the profile's timers (ServiceConfig.settings); None = the profile's
        defaults from shared.config."""
        env = os.environ if env is None else env
        settings = settings if settings is not None else DnsSettings.for_profile(launch.profile)
        host, port = split_address(launch.dns_listen_address)
        return cls(listen_host=host, listen_port=port, domain=launch.dns_domain, ttl_s=launch.dns_ttl,
                   resolv_conf=Path(env.get(RESOLV_CONF_ENV) or DEFAULT_RESOLV_CONF),
                   gossip_interval_s=settings.gossip_interval_s, tombstone_timeout_s=settings.tombstone_purge_s,
                   upstream_timeout_s=settings.upstream_timeout_s)


def split_address(address: str) -> tuple[str, int]:
    """`ip:port` (or `[v6]:port`) -> (ip, port); ValueError names the bad text."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"invalid DNS listen address {address!r}: expected ip:port, e.g. 0.0.0.0:53")
    return host.strip("[]") or "0.0.0.0", int(port)
