"""A blocking rtnetlink handle: `IPRoute` and `NetlinkError`, the part of pyroute2's
IPRoute the project uses, on shared/rtnl.py (issue 15: see there for why it is ours).

One NETLINK_ROUTE socket per handle, in the namespace it was opened in (or the socket
given by `fileno`, opened elsewhere: shared/netns.py). Every call sends one request and
reads its answer on the calling thread; none starts a thread or an event loop. A kernel
error raises NetlinkError with its errno in `.code`.
"""
from __future__ import annotations

import errno
import os
import socket
from typing import Any

from shared import rtnl
from shared.netlink_wire import NLM_F_DUMP, Answer, message

RECV_BYTES = 1 << 16  # a dump's datagrams are at most 32 kB
SOCKET_BUFFER = 1 << 20


class NetlinkError(OSError):
    """The kernel refused a request: `.code` is the errno."""

    def __init__(self, code: int, msg: str | None = None) -> None:
        super().__init__(code, msg or os.strerror(code))
        self.code = code


class IPRoute:
    def __init__(self, fileno: int | None = None) -> None:
        if fileno is None:
            self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                       socket.NETLINK_ROUTE)
        else:
            self._sock = socket.socket(fileno=fileno)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
            self._sock.bind((0, 0))
        except OSError:
            self._sock.close()
            raise
        self._seq = 0

    def __enter__(self) -> "IPRoute":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    # -- one request, its answer --------------------------------------------------
    def request(self, req: rtnl.Request) -> list[rtnl.Msg]:
        """Send `req` and return what the kernel answered with (decoded messages; none
        for an acknowledged change). Raises NetlinkError for a refusal."""
        kind, flags, body = req
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        self._sock.send(message(kind, flags, self._seq, body))
        answer = Answer(self._seq, dump=flags & NLM_F_DUMP == NLM_F_DUMP)
        while not answer.feed(self._sock.recv(RECV_BYTES)):
            pass
        if answer.error:
            raise NetlinkError(answer.error)
        decoded = (rtnl.decode(t, b) for t, b in answer.messages)
        return [m for m in decoded if m is not None]

    # -- what pyroute2's IPRoute offered, as the project used it ------------------------
    def get_links(self, *indices: int) -> list[rtnl.Msg]:
        """Every link (no argument), or the links with these indices (NetlinkError ENODEV
        for one that does not exist)."""
        if not indices:
            return self.request(rtnl.dump_links())
        return [m for index in indices for m in self.request(rtnl.get_link(index=index))]

    def link_lookup(self, *, ifname: str) -> list[int]:
        """[index] of the link named `ifname`, or []."""
        try:
            return [m["index"] for m in self.request(rtnl.get_link(ifname=ifname))]
        except NetlinkError as exc:
            if exc.code == errno.ENODEV:
                return []
            raise

    def link(self, command: str, **kw: Any) -> list[rtnl.Msg]:
        return self.request(rtnl.link(command, **kw))

    def get_addr(self, family: int = socket.AF_UNSPEC, *, index: int | None = None,
                 address: str | None = None) -> list[rtnl.Msg]:
        """The addresses of `family`, of link `index` and/or equal to `address` if given."""
        return [m for m in self.request(rtnl.dump_addrs(family))
                if (index is None or m["index"] == index) and (address is None or m.get("IFA_ADDRESS") == address)]

    def addr(self, command: str, **kw: Any) -> list[rtnl.Msg]:
        return self.request(rtnl.addr(command, **kw))

    def route(self, command: str, **kw: Any) -> list[rtnl.Msg]:
        return self.request(rtnl.route(command, **kw))

    def fdb(self, command: str, **kw: Any) -> list[rtnl.Msg]:
        """append/del one entry; dump: the entries of `ifindex` (every port's if none)."""
        if command == "dump":
            ifindex = kw.pop("ifindex", None)
            if kw:
                raise TypeError(f"fdb dump: unsupported argument(s) {', '.join(sorted(kw))}")
            return [m for m in self.request(rtnl.dump_fdb()) if ifindex is None or m["ifindex"] == ifindex]
        return self.request(rtnl.fdb(command, **kw))

    def brport(self, command: str, *, index: int, hairpin_mode: int) -> list[rtnl.Msg]:
        if command != "set":
            raise ValueError(f"brport: unknown command {command!r}")
        return self.request(rtnl.brport_hairpin(index, bool(hairpin_mode)))

    def get_netnsid(self, *, fd: int) -> dict | None:
        """{'nsid': n} for the namespace open at `fd` (-1 if this one gave it none)."""
        for m in self.request(rtnl.get_nsid(fd)):
            return {"nsid": m.get("NETNSA_NSID")}
        return None


__all__ = ["IPRoute", "NetlinkError"]
