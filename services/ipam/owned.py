"""Which container holds which addresses (Weave's `owned` map, persisted as
`ownedAddresses`).

Keys are container IDs, or other idents such as `weave:expose`; an allocation made
without an ID (`NO_CONTAINER_ID`) is filed under its own address, so that it can be
released by address. `is_container` marks idents that are real containers (only those
are pruned when their container is gone).

`take_changes()` lists the idents changed since it was last called, for a store that
writes only those (a full snapshot per allocation costs O(containers)).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from services.ipam.address import CIDR, Range, parse_cidr

NO_CONTAINER_ID = "_"


@dataclass
class OwnedData:
    is_container: bool = False
    cidrs: list[CIDR] = field(default_factory=list)


class Owned:
    def __init__(self) -> None:
        self.by_ident: dict[str, OwnedData] = {}
        self._changed: set[str] = set()

    def __contains__(self, ident: str) -> bool:
        return ident in self.by_ident

    def add(self, ident: str, cidr: CIDR, is_container: bool) -> None:
        """Record cidr for ident; the caller made sure ident does not hold it yet."""
        data = self.by_ident.setdefault(ident, OwnedData())
        data.is_container = is_container
        data.cidrs.append(cidr)
        self._changed.add(ident)

    def remove_all(self, ident: str) -> list[CIDR]:
        data = self.by_ident.pop(ident, None)
        self._changed.add(ident)
        return data.cidrs if data else []

    def remove(self, ident: str, addr: int) -> bool:
        data = self.by_ident.get(ident)
        if data is None:
            return False
        for i, cidr in enumerate(data.cidrs):
            if cidr.addr == addr:
                del data.cidrs[i]
                if not data.cidrs:
                    del self.by_ident[ident]
                self._changed.add(ident)
                return True
        return False

    def in_range(self, ident: str, r: Range) -> list[CIDR]:
        data = self.by_ident.get(ident)
        return [c for c in data.cidrs if r.contains(c.addr)] if data else []

    def find_owner(self, addr: int) -> str:
        """The ident holding addr, or "" if none."""
        for ident, data in self.by_ident.items():
            if any(c.addr == addr for c in data.cidrs):
                return ident
        return ""

    def all_cidrs(self) -> list[CIDR]:
        return [c for data in self.by_ident.values() for c in data.cidrs]

    def take_changes(self) -> dict[str, dict | None]:
        """{ident: its to_dict() entry, or None if it holds nothing now} for every ident
        changed since the last call; forgets them. `changed()` puts them back (a failed write)."""
        changes = {i: self._entry(self.by_ident[i]) if i in self.by_ident else None for i in self._changed}
        self._changed = set()
        return changes

    def changed(self, idents) -> None:
        self._changed.update(idents)

    @staticmethod
    def _entry(d: OwnedData) -> dict:
        return {"is_container": d.is_container, "cidrs": [str(c) for c in d.cidrs]}

    def to_dict(self) -> dict:
        return {ident: self._entry(d) for ident, d in sorted(self.by_ident.items())}

    @classmethod
    def from_dict(cls, d: dict) -> "Owned":
        owned = cls()
        for ident, data in d.items():
            owned.by_ident[ident] = OwnedData(bool(data["is_container"]),
                                              [parse_cidr(c) for c in data["cidrs"]])
        return owned
