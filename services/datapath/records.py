"""What the datapath has attached, kept in the state dir so a restarted datapath (or a
whole stack after `weave stop` + `weave launch`) finds its containers again.

One JSON file, `datapath-attachments.json`, rewritten durably and atomically after
every change (`shared.durable.write_atomic`: write, fsync, rename), before the change is
acknowledged. It holds one record per attached container and one for the bridge's own
addresses (weave:expose). A record names the container's namespace by the path that
reopens it (`/var/run/netns/<name>` or `/proc/<pid>/ns/net`) and by its inode, so a
reused name or pid is not mistaken for the old container.

Rules the service follows (services/datapath/containers.py):
- a record is written only after the kernel change it describes succeeded;
- at start every record is re-applied (idempotent: only missing veths, addresses and
  routes are made; the MAC is kept); a record whose namespace is gone is dropped and
  reported detached;
- an unreadable file is logged and treated as empty (it is rewritten on the next change).
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from shared.durable import write_atomic

log = logging.getLogger(__name__)

RECORDS_FILE = "datapath-attachments.json"
EXPOSE_ID = "weave:expose"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ContainerRecord:
    container_id: str
    """As the user named it (namespace name, pid or path): `weave ps` shows it."""
    netns_path: str
    """Path that reopens the namespace."""
    netns_inode: int
    mac: str
    cidrs: tuple[str, ...]
    fqdn: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    namespace: str = "default"
    multicast_route: bool = True
    ipam_cidrs: tuple[str, ...] = ()
    """The subset of `cidrs` IPAM handed out or recorded a claim for (released on detach)."""
    ifname: str = "ethwe"
    """Its interface inside the container (CNI pods name theirs)."""
    ipam_ident: str = ""
    """'_' when its addresses are the Docker plugin IPAM driver's (attach with ipam=False), else ''."""


@dataclass(frozen=True)
class ExposeRecord:
    cidrs: tuple[str, ...] = ()
    fqdn: str = ""
    ipam_cidrs: tuple[str, ...] = ()
    unmasqueraded: tuple[str, ...] = ()
    """The subset of `cidrs` exposed --without-masquerade (host_iptables.py)."""


class Records:
    """The records of one host, loaded from and saved to `state_dir`."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / RECORDS_FILE
        self.containers: dict[int, ContainerRecord] = {}
        """By namespace inode: one weave interface per container."""
        self.expose = ExposeRecord()

    def load(self) -> None:
        try:
            data = json.loads(self.path.read_text())
            self.containers = {}
            for raw in data.get("containers", []):
                rec = ContainerRecord(**{**raw, "cidrs": tuple(raw["cidrs"]),
                                         "ipam_cidrs": tuple(raw.get("ipam_cidrs", ()))})
                self.containers[rec.netns_inode] = rec
            raw = data.get("expose") or {}
            self.expose = ExposeRecord(tuple(raw.get("cidrs", ())), raw.get("fqdn", ""),
                                       tuple(raw.get("ipam_cidrs", ())), tuple(raw.get("unmasqueraded", ())))
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.error("cannot read %s (%s): starting with no attachments", self.path, exc)

    def save(self) -> None:
        data = {"version": FORMAT_VERSION, "containers": [asdict(r) for r in self.containers.values()],
                "expose": asdict(self.expose)}
        write_atomic(self.path, json.dumps(data, indent=1))

    def by_id(self, container_id: str) -> ContainerRecord | None:
        return next((r for r in self.containers.values() if r.container_id == container_id), None)

    def put(self, rec: ContainerRecord) -> None:
        self.containers[rec.netns_inode] = rec
        self.save()

    def drop(self, inode: int) -> ContainerRecord | None:
        rec = self.containers.pop(inode, None)
        if rec is not None:
            self.save()
        return rec

    def set_expose(self, rec: ExposeRecord) -> None:
        self.expose = rec
        self.save()

    def update(self, inode: int, **changes: object) -> ContainerRecord:
        rec = replace(self.containers[inode], **changes)
        self.put(rec)
        return rec
