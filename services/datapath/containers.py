"""`weave attach / detach / ps / expose / hide` as the datapath service does them:
addresses from IPAM, devices through attach.py (netlink, in a worker thread), records
in the state dir, and a ContainerEvent on weave.events.containers for dns and npc.

Order of work for attach (so a failure leaves nothing half-made):
1. resolve the namespace (NotFound before anything else is touched);
2. addresses: explicit ones are claimed in IPAM when it runs (works without it);
   `net:` ones are allocated (needs IPAM);
3. the kernel (attach.py rolls its own changes back on error);
4. on any error after 2, every address IPAM handed out in this call is released;
5. the record is written, then the event published.
All five operations run one at a time (one lock), as attach.py requires.
expose, hide and restore end by handing the exposed addresses to `on_exposed` (the
service sets weaver's NAT and FORWARD rules from them, host_iptables.py).
"""
from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Interface, IPv4Network

from services.datapath import attach as att
from services.datapath.bridge import Host, destroy_bridge
from services.datapath.ipam_client import Ipam
from services.datapath.netns import BadRequest, Conflict, DatapathError, NotFound, open_namespace
from services.datapath.records import EXPOSE_ID, ContainerRecord, ExposeRecord, Records
from shared.schemas.datapath import (Attachment, AttachRequest, ContainerEvent, DetachReply, DetachRequest,
                                     ExposeRequest, HideRequest, PsReply, PsRequest)

log = logging.getLogger(__name__)

Publish = Callable[[ContainerEvent], Awaitable[None]]
OnExposed = Callable[[ExposeRecord], Awaitable[None]]
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
NO_CONTAINER_IDENT = "_"
"""IPAM's ident for addresses filed under themselves (the Docker plugin's)."""


# -- ADDR arguments --------------------------------------------------------------------
def parse_addr_args(args: tuple[str, ...]) -> list[IPv4Interface | IPv4Network | None]:
    """Weave's ADDR syntax: `[ip:]a.b.c.d/n` -> that interface; `net:a.b.c.d/n` -> allocate
    in that subnet; `net:default` -> None (IPAM's default subnet). No ADDR = net:default."""
    out: list[IPv4Interface | IPv4Network | None] = []
    for arg in args or ("net:default",):
        if arg == "net:default":
            out.append(None)
        elif arg.startswith("net:"):
            try:
                out.append(IPv4Network(arg[4:], strict=False))
            except ValueError as exc:
                raise BadRequest(f"invalid subnet {arg!r}: use net:a.b.c.d/n or net:default", address=arg) from exc
        else:
            out.extend(att.parse_addrs([arg[3:] if arg.startswith("ip:") else arg]))
    return out


def check_fqdn(fqdn: str) -> str:
    """A DNS name for weaveDNS (a trailing dot is dropped), or BadRequest."""
    name = fqdn.rstrip(".")
    if not fqdn:
        return ""
    if len(name) > 253 or not all(_LABEL.match(label) for label in name.split(".")):
        raise BadRequest(f"{fqdn!r} is not a valid DNS name (labels of letters, digits and '-', "
                         "at most 63 characters each)", fqdn=fqdn)
    return name


def _in(iface: IPv4Interface, wanted: list[IPv4Interface | IPv4Network | None]) -> bool:
    for w in wanted:
        if isinstance(w, IPv4Interface) and w.ip == iface.ip:
            return True
        if isinstance(w, IPv4Network) and iface.ip in w:
            return True
    return False


class Containers:
    """The attachments of one host; `host` is its namespace (None: this thread's)."""

    def __init__(self, records: Records, ipam: Ipam, publish: Publish, host: Host = None,
                 on_exposed: OnExposed | None = None) -> None:
        self.records, self.ipam, self.publish, self.host = records, ipam, publish, host
        self.on_exposed = on_exposed
        self.lock = asyncio.Lock()

    async def _exposed(self) -> None:
        if self.on_exposed is not None:
            await self.on_exposed(self.records.expose)

    # -- attach --------------------------------------------------------------------------
    async def attach(self, req: AttachRequest) -> Attachment:
        wanted = parse_addr_args(req.addrs)
        fqdn = check_fqdn(req.fqdn)
        async with self.lock:
            ns = await asyncio.to_thread(open_namespace, req.container)
            try:
                return await self._attach(ns, wanted, fqdn, req)
            finally:
                ns.close()

    async def _attach(self, ns, wanted, fqdn: str, req: AttachRequest) -> Attachment:
        old = self.records.containers.get(ns.inode)
        if old and fqdn and old.fqdn and fqdn != old.fqdn:
            raise Conflict(f"container {old.container_id} is attached as {old.fqdn}: detach it before "
                           f"attaching it as {fqdn}", fqdn=fqdn)
        cid = req.container_id or (old.container_id if old else att._label(ns))
        explicit = [w for w in wanted if isinstance(w, IPv4Interface)]
        if not req.ipam and len(explicit) != len(wanted):
            raise BadRequest("without IPAM (ipam=false) give the addresses themselves, not net:", container=cid)
        if explicit:  # before IPAM records a claim we would have to take back
            await asyncio.to_thread(att.check_free, ns, explicit, host=self.host)
        cidrs, fresh = await self._addresses(cid, wanted) if req.ipam else (explicit, [])
        try:
            got = await asyncio.to_thread(att.attach, ns, cidrs, host=self.host,
                                          multicast_route=req.multicast_route, ifname=req.ifname)
        except BaseException:
            await self._release(cid, [c for c in fresh if not old or str(c) not in old.ipam_cidrs])
            raise
        ipam_cidrs = tuple(dict.fromkeys([*(old.ipam_cidrs if old else ()), *map(str, fresh)]))
        keep = old if old is not None and not req.labels and req.namespace == "default" else None
        rec = ContainerRecord(cid, ns.path, ns.inode, got.mac, got.cidrs, fqdn or (old.fqdn if old else ""),
                              keep.labels if keep else dict(req.labels), keep.namespace if keep else req.namespace,
                              req.multicast_route, tuple(c for c in ipam_cidrs if c in got.cidrs), req.ifname,
                              "" if req.ipam else NO_CONTAINER_IDENT)
        self.records.put(rec)
        await self.publish(_event("attached", rec))
        return _info(rec, got.ifname, got.host_ifname, tuple(map(str, cidrs)))

    async def _addresses(self, ident: str, wanted) -> tuple[list[IPv4Interface], list[IPv4Interface]]:
        """(every address for the kernel, those IPAM holds for `ident` now). Releases
        what it allocated if a later allocation fails."""
        cidrs: list[IPv4Interface] = []
        fresh: list[IPv4Interface] = []
        try:
            for w in wanted:
                if isinstance(w, IPv4Interface):
                    if await self.ipam.claim(ident, str(w)):
                        fresh.append(w)
                    cidrs.append(w)
                else:
                    got = IPv4Interface(await self.ipam.allocate(ident, str(w) if w else None))
                    fresh.append(got)
                    cidrs.append(got)
        except BaseException:
            await self._release(ident, fresh)
            raise
        return cidrs, fresh

    async def _release(self, ident: str, cidrs) -> None:
        for c in cidrs:
            await self.ipam.release(ident, str(IPv4Interface(c).ip))

    # -- detach --------------------------------------------------------------------------
    async def detach(self, req: DetachRequest) -> DetachReply:
        wanted = parse_addr_args(req.addrs) if req.addrs else None
        async with self.lock:
            rec = self.records.by_id(req.container)
            try:
                ns = await asyncio.to_thread(open_namespace, req.container)
            except NotFound:
                if rec is None:
                    raise
                return await self._forget(rec)  # the container is gone: forget it
            try:
                rec = self.records.containers.get(ns.inode, rec)
                removed = await self._detach(ns, rec, wanted)
            finally:
                ns.close()
        return removed

    async def _detach(self, ns, rec: ContainerRecord | None, wanted) -> DetachReply:
        current = await asyncio.to_thread(self._current, ns)
        gone = [c for c in current if wanted is None or _in(IPv4Interface(c), wanted)]
        left = await asyncio.to_thread(att.detach, ns, gone if wanted is not None else None, host=self.host,
                                       ifname=rec.ifname if rec else "ethwe")
        remaining = left.cidrs if left else ()
        cid = rec.container_id if rec else att._label(ns)
        if rec is not None:
            if left is None:
                await self.ipam.release(cid)  # everything IPAM holds for it, as Weave's detach
                self.records.drop(rec.netns_inode)
                await self.publish(_event("detached", rec))
            else:
                await self._release(cid, [c for c in rec.ipam_cidrs if c not in remaining])
                rec = self.records.update(rec.netns_inode, cidrs=remaining,
                                          ipam_cidrs=tuple(c for c in rec.ipam_cidrs if c in remaining))
                await self.publish(_event("attached", rec))
        return DetachReply(container_id=cid, removed=tuple(gone), remaining=remaining)

    def _current(self, ns) -> list[str]:
        found = [a for a in att.list_attached(self.host) if a.netns_inode == ns.inode]
        if not found:
            raise NotFound(f"container {ns.ident} is not attached to weave", container=ns.ident)
        return list(found[0].cidrs)

    async def _forget(self, rec: ContainerRecord) -> DetachReply:
        self.records.drop(rec.netns_inode)
        await self.ipam.release(rec.container_id)
        await self.publish(_event("detached", rec))
        return DetachReply(container_id=rec.container_id, removed=rec.cidrs, remaining=())

    # -- ps ------------------------------------------------------------------------------
    async def ps(self, req: PsRequest) -> PsReply:
        found = await asyncio.to_thread(att.list_attached, self.host)
        out = []
        for a in found:
            rec = self.records.containers.get(a.netns_inode)
            if a.container == att.EXPOSE:
                out.append(Attachment(container_id=EXPOSE_ID, mac=a.mac, cidrs=a.cidrs, fqdn=self.records.expose.fqdn,
                                      ifname=a.ifname, host_ifname=a.host_ifname))
            else:
                out.append(Attachment(container_id=rec.container_id if rec else a.container, mac=a.mac,
                                      cidrs=a.cidrs, fqdn=rec.fqdn if rec else "", ifname=a.ifname,
                                      host_ifname=a.host_ifname))
        if req.containers:
            inodes = {a.container_id: a2.netns_inode for a, a2 in zip(out, found)}
            wanted = await asyncio.to_thread(_resolve_inodes, req.containers)
            out = [a for a in out if a.container_id in req.containers or inodes[a.container_id] in wanted]
        return PsReply(attachments=tuple(out))

    # -- expose / hide -------------------------------------------------------------------
    async def expose(self, req: ExposeRequest) -> Attachment:
        wanted = parse_addr_args(req.addrs)
        fqdn = check_fqdn(req.fqdn)
        async with self.lock:
            cidrs, fresh = await self._addresses(EXPOSE_ID, wanted)
            try:
                got = await asyncio.to_thread(att.expose, cidrs, host=self.host)
            except BaseException:
                await self._release(EXPOSE_ID, [c for c in fresh if str(c) not in self.records.expose.ipam_cidrs])
                raise
            old = self.records.expose
            held = tuple(dict.fromkeys([*old.ipam_cidrs, *map(str, fresh)]))
            added = {str(c) for c in cidrs}
            plain = [c for c in got.cidrs if (c in old.unmasqueraded and c not in added)
                     or (c in added and not req.masquerade)]
            self.records.set_expose(ExposeRecord(got.cidrs, fqdn or old.fqdn, tuple(c for c in held if c in got.cidrs),
                                                 tuple(plain)))
            await self._exposed()
            await self.publish(self._expose_event(got.mac))
            return Attachment(container_id=EXPOSE_ID, mac=got.mac, cidrs=got.cidrs, fqdn=self.records.expose.fqdn,
                              ifname=got.ifname, host_ifname=got.host_ifname, added=tuple(map(str, cidrs)))

    async def hide(self, req: HideRequest) -> DetachReply:
        wanted = parse_addr_args(req.addrs) if req.addrs else None
        async with self.lock:
            state = await asyncio.to_thread(att.hide, [], host=self.host)
            gone = [c for c in state.cidrs if wanted is None or _in(IPv4Interface(c), wanted)]
            got = await asyncio.to_thread(att.hide, gone, host=self.host)
            old = self.records.expose
            await self._release(EXPOSE_ID, [c for c in old.ipam_cidrs if c not in got.cidrs])
            self.records.set_expose(ExposeRecord(got.cidrs, old.fqdn if got.cidrs else "",
                                                 tuple(c for c in old.ipam_cidrs if c in got.cidrs),
                                                 tuple(c for c in old.unmasqueraded if c in got.cidrs)))
            await self._exposed()
            event = self._expose_event(got.mac)
            await self.publish(event if got.cidrs else event.model_copy(update={"kind": "detached", "cidrs": ()}))
            return DetachReply(container_id=EXPOSE_ID, removed=tuple(gone), remaining=got.cidrs)

    def _expose_event(self, mac: str) -> ContainerEvent:
        e = self.records.expose
        return ContainerEvent(kind="attached", container_id=EXPOSE_ID, cidrs=e.cidrs, mac=mac, fqdn=e.fqdn)

    # -- restart, reconcile, snapshot ------------------------------------------------------
    async def restore(self) -> None:
        """Re-apply every record after a restart (module docstring of records.py)."""
        async with self.lock:
            for rec in list(self.records.containers.values()):
                await self._restore_one(rec)
            e = self.records.expose
            if e.cidrs:
                got = await asyncio.to_thread(att.expose, list(e.cidrs), host=self.host)
                await self.publish(self._expose_event(got.mac))
            await self._exposed()  # weaver's rules, for what is exposed now (also: none)

    async def _restore_one(self, rec: ContainerRecord) -> None:
        try:
            ns = await asyncio.to_thread(open_namespace, rec.netns_path)
        except DatapathError:
            ns = None
        if ns is None or ns.inode != rec.netns_inode:
            if ns is not None:
                ns.close()
            log.info("container %s is gone: forgetting it", rec.container_id)
            await self._forget(rec)
            return
        try:
            got = await asyncio.to_thread(att.attach, ns, list(rec.cidrs), host=self.host, mac=rec.mac,
                                          multicast_route=rec.multicast_route, ifname=rec.ifname)
            rec = self.records.update(rec.netns_inode, cidrs=got.cidrs)
            await self.publish(_event("attached", rec))
        except DatapathError as exc:
            log.error("cannot restore container %s: %s", rec.container_id, exc)
        finally:
            ns.close()

    async def reconcile(self) -> None:
        """Forget containers whose namespace has gone (their veth went with it)."""
        async with self.lock:
            # (in our own namespace a cheap call: no worker thread woken every few seconds)
            ports = att.host_ports() if self.host is None else await asyncio.to_thread(att.host_ports, self.host)
            for rec in [r for r in self.records.containers.values() if att.host_ifname_for(r.netns_inode) not in ports]:
                if not await asyncio.to_thread(_alive, rec):
                    log.info("container %s has gone away: detached", rec.container_id)
                    await self._forget(rec)

    def events(self) -> list[ContainerEvent]:
        out = [_event("attached", r) for r in self.records.containers.values()]
        e = self.records.expose
        if e.cidrs:
            out.append(ContainerEvent(kind="attached", container_id=EXPOSE_ID, cidrs=e.cidrs, fqdn=e.fqdn))
        return out

    async def teardown_if_unused(self) -> bool:
        """At `weave stop`: remove the bridge when no container and no exposed address
        uses it (a host with no containers is left as it was before launch); otherwise
        leave everything, as Weave's `weave stop` does. True if removed."""
        async with self.lock:
            try:
                found = await asyncio.to_thread(att.list_attached, self.host)
            except NotFound:
                return False
            if found:
                return False
            await asyncio.to_thread(destroy_bridge, self.host)
            return True


def _event(kind: str, rec: ContainerRecord) -> ContainerEvent:
    return ContainerEvent(kind=kind, container_id=rec.container_id, cidrs=rec.cidrs if kind == "attached" else (),
                          mac=rec.mac, fqdn=rec.fqdn, labels=rec.labels, namespace=rec.namespace,
                          netns_inode=rec.netns_inode, ipam_ident=rec.ipam_ident)


def _info(rec: ContainerRecord, ifname: str, host_ifname: str, added: tuple[str, ...]) -> Attachment:
    return Attachment(container_id=rec.container_id, mac=rec.mac, cidrs=rec.cidrs, fqdn=rec.fqdn,
                      ifname=ifname, host_ifname=host_ifname, added=added)


def _alive(rec: ContainerRecord) -> bool:
    try:
        with open_namespace(rec.netns_path) as ns:
            return ns.inode == rec.netns_inode
    except DatapathError:
        return False


def _resolve_inodes(names: tuple[str, ...]) -> set[int]:
    out = set()
    for n in names:
        if n == EXPOSE_ID:
            out.add(0)
            continue
        try:
            with open_namespace(n) as ns:
                out.add(ns.inode)
        except DatapathError:
            pass
    return out

