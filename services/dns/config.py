"""What the dns service process runs with: the listen address, domain and TTL from the
host's LaunchConfig, and the service's settings (`shared.config.DnsSettings`, where
every tunable is documented, with its production and test profiles and the one the
environment sets, WEAVE_DNS_RESOLV_CONF).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from shared.config import DnsSettings, LaunchConfig


@dataclass(frozen=True)
class DnsConfig:
    listen_host: str
    listen_port: int
    domain: str
    ttl_s: int
    settings: DnsSettings = field(default_factory=DnsSettings)
    """The service's tunables (production's by default)."""

    @property
    def address(self) -> str:
        """host:port as Weave prints it (/dns-address-port, /report Address)."""
        return f"{self.listen_host}:{self.listen_port}"

    @classmethod
    def from_launch(cls, launch: LaunchConfig, settings: DnsSettings) -> "DnsConfig":
        """`settings`: the service's (ServiceConfig.settings). ValueError names a bad
        --dns-listen-address."""
        host, port = split_address(launch.dns_listen_address)
        return cls(listen_host=host, listen_port=port, domain=launch.dns_domain, ttl_s=launch.dns_ttl,
                   settings=settings)


def split_address(address: str) -> tuple[str, int]:
    """`ip:port` (or `[v6]:port`) -> (ip, port); ValueError names the bad text."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"invalid DNS listen address {address!r}: expected ip:port, e.g. 0.0.0.0:53")
    return host.strip("[]") or "0.0.0.0", int(port)
