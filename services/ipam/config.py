"""Configuration of one allocator core, and Weave's `--ipalloc-init` modes.

`allocator_config` builds it from the host's LaunchConfig and the service's
IpamSettings (shared.config, where each timer is documented); the defaults here are the
production profile's, for cores made without one (tests).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from shared.config import IpamSettings, LaunchConfig
from shared.weave.peer_name import PeerName
from services.ipam.address import CIDR, parse_subnet

_PRODUCTION = IpamSettings()


@dataclass(frozen=True)
class AllocatorConfig:
    our_name: PeerName
    our_uid: int  # this process's mesh UID: a restarted peer is a new Paxos node
    universe: CIDR  # --ipalloc-range, a subnet of at least 4 addresses
    our_nickname: str = ""
    default_subnet: CIDR | None = None  # --ipalloc-default-subnet; None = the universe
    seed: tuple[PeerName, ...] = ()  # --ipalloc-init=seed=...: ring made locally from these
    observer: bool = False  # --ipalloc-init=observer: no vote, waits for a ring
    quorum: int = 1  # electors needed for consensus (N/2+1)
    tick_interval: float = _PRODUCTION.tick_s  # seconds between retries of pending work
    container_died_timeout: float = _PRODUCTION.container_died_s  # seconds before a dead container's addresses go
    random_seed: int | None = None  # for the weighted choice of whom to ask for space

    def __post_init__(self) -> None:
        if not self.universe.is_subnet or self.universe.size < 4:
            raise ValueError(f"invalid --ipalloc-range {self.universe}")
        if self.default_subnet is None:
            object.__setattr__(self, "default_subnet", self.universe)
        elif not self.universe.range().overlaps(self.default_subnet.range()):
            raise ValueError(f"default subnet {self.default_subnet} does not overlap {self.universe}")
        if not self.observer and not self.seed and self.quorum < 1:
            raise ValueError("an elector needs a quorum of at least 1")


@dataclass(frozen=True)
class InitMode:
    seed: tuple[PeerName, ...] = ()
    observer: bool = False
    quorum: int = 1


def parse_init_mode(text: str, target_count: int) -> InitMode:
    """Weave's `--ipalloc-init`: `consensus[=N]`, `seed=<name>,...`, or `observer`.

    Without N, the quorum counts the peers given on the command line plus us:
    (targets + 1) / 2 + 1.
    """
    kind, _, arg = text.partition("=")
    if kind == "consensus":
        count = int(arg) if arg else target_count + 1
        if count < 1:
            raise ValueError(f"invalid consensus count in {text!r}")
        return InitMode(quorum=count // 2 + 1)
    if kind == "seed" and arg:
        return InitMode(seed=tuple(PeerName.parse(p) for p in arg.split(",")))
    if kind == "observer" and not arg:
        return InitMode(observer=True, quorum=0)
    raise ValueError(f"invalid --ipalloc-init mode {text!r}")


def allocator_config(launch: LaunchConfig, settings: IpamSettings) -> AllocatorConfig:
    """This host's allocator: its range, its `--ipalloc-init` mode and the profile's
    timers. ValueError (with Weave's wording) for a bad range or --ipalloc-init."""
    mode = parse_init_mode(launch.ipalloc_init or "consensus", len(launch.peers))
    if launch.name is None:
        raise ValueError("no peer name in launch.json; 'weave launch' writes one")
    return AllocatorConfig(
        our_name=PeerName.parse(launch.name), our_uid=random.SystemRandom().getrandbits(63) or 1,
        universe=parse_subnet(launch.ipalloc_range), our_nickname=launch.nickname,
        seed=mode.seed, observer=mode.observer, quorum=mode.quorum,
        tick_interval=settings.tick_s, container_died_timeout=settings.container_died_s)


def mode_name(config: AllocatorConfig) -> str:
    """"consensus", "seed" or "observer", as status and the bus API say it."""
    return "observer" if config.observer else "seed" if config.seed else "consensus"
