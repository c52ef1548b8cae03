"""Settings of the ipam service process, built once from the host's LaunchConfig.

Profiles: `production` keeps Weave Net's timers; `test` shortens them so end-to-end
tests converge in seconds (re-proposals, retries and periodic gossip repair lost
messages; with Weave's timers a lost broadcast costs up to 30 s).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from shared.weave.peer_name import PeerName
from services.ipam.address import parse_subnet
from services.ipam.config import AllocatorConfig, parse_init_mode
from shared.config import LaunchConfig

DB_FILE = "ipam.db"


@dataclass(frozen=True)
class IpamServiceConfig:
    allocator: AllocatorConfig
    mode: str  # "consensus", "seed" or "observer", for status
    gossip_interval_s: float  # periodic full-state gossip (mesh's 30 s)
    max_waiting_requests: int  # requests held at once (allocations waiting for a ring or space)


PROFILES = {
    # tick: Weave's 5 s retry of pending work; container_died: Weave's 30 s; gossip: mesh's 30 s.
    "production": {"tick_interval": 5.0, "container_died_timeout": 30.0, "gossip_interval_s": 30.0},
    "test": {"tick_interval": 1.0, "container_died_timeout": 3.0, "gossip_interval_s": 2.0},
}


def from_launch(launch: LaunchConfig, shared: object = None) -> IpamServiceConfig:
    """Raises ValueError (with Weave's wording) for a bad range or --ipalloc-init.

    `shared`: the service's settings from shared.config (ServiceConfig.settings) where
    that exists; its `tick_s` and `gossip_interval_s` then win over PROFILES."""
    timers = dict(PROFILES[launch.profile])
    for ours, theirs in (("tick_interval", "tick_s"), ("gossip_interval_s", "gossip_interval_s")):
        if getattr(shared, theirs, None) is not None:
            timers[ours] = float(getattr(shared, theirs))
    init = launch.ipalloc_init or "consensus"
    mode = parse_init_mode(init, len(launch.peers))
    if launch.name is None:
        raise ValueError("no peer name in launch.json; 'weave launch' writes one")
    config = AllocatorConfig(
        our_name=PeerName.parse(launch.name), our_uid=random.SystemRandom().getrandbits(63) or 1,
        universe=parse_subnet(launch.ipalloc_range), our_nickname=launch.nickname,
        seed=mode.seed, observer=mode.observer, quorum=mode.quorum,
        tick_interval=timers["tick_interval"], container_died_timeout=timers["container_died_timeout"])
    kind = "observer" if mode.observer else "seed" if mode.seed else "consensus"
    # 4096 waiting requests: far above a host's container churn, and bounded memory.
    return IpamServiceConfig(allocator=config, mode=kind, gossip_interval_s=timers["gossip_interval_s"],
                             max_waiting_requests=4096)
