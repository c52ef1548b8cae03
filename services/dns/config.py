"""Settings of the dns service, from the host's LaunchConfig and the environment.

The environment is read here only, when the settings are built (STYLE.md 11):
`WEAVE_DNS_RESOLV_CONF` names the resolv.conf to take upstream servers from (Weave's
`--resolv-conf`; tests point it at a file of their own). Profiles: `production` keeps
Weave's timers; `test` gossips the full state every 5 s instead of 30 s.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from shared.config import LaunchConfig

RESOLV_CONF_ENV = "WEAVE_DNS_RESOLV_CONF"
DEFAULT_RESOLV_CONF = Path("/etc/resolv.conf")


@dataclass(frozen=True)
class DnsSettings:
    listen_host: str
    listen_port: int
    domain: str
    ttl_s: int
    resolv_conf: Path
    gossip_interval_s: float = 30.0
    """Full state to random neighbours this often (mesh's gossip interval)."""
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
    """A TCP client silent this long is dropped (miekg's default read timeout is 2 s;
    longer here for slow test hosts, short enough to free the slot)."""
    snapshot_delay_s: float = 1.0
    """Changes are written to the snapshot at most this often (coalesced)."""

    @property
    def address(self) -> str:
        """host:port as Weave prints it (/dns-address-port, /report Address)."""
        return f"{self.listen_host}:{self.listen_port}"

    @classmethod
    def from_launch(cls, launch: LaunchConfig, env: Mapping[str, str] | None = None) -> "DnsSettings":
        env = os.environ if env is None else env
        host, port = split_address(launch.dns_listen_address)
        return cls(listen_host=host, listen_port=port, domain=launch.dns_domain, ttl_s=launch.dns_ttl,
                   resolv_conf=Path(env.get(RESOLV_CONF_ENV) or DEFAULT_RESOLV_CONF),
                   gossip_interval_s=5.0 if launch.profile == "test" else 30.0)


def split_address(address: str) -> tuple[str, int]:
    """`ip:port` (or `[v6]:port`) -> (ip, port); ValueError names the bad text."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"invalid DNS listen address {address!r}: expected ip:port, e.g. 0.0.0.0:53")
    return host.strip("[]") or "0.0.0.0", int(port)
