"""The kernel's word that a link of this namespace was deleted (RTM_DELLINK on the
RTNLGRP_LINK group of a NETLINK_ROUTE socket).

A container's namespace that goes away takes its veth pair with it, so the host end
(vethwepl...) is deleted and the kernel says so at once. The datapath reconciles its
containers on that word instead of asking for every link every few seconds: a vanished
container is detached within milliseconds, and a host at rest is not woken for it.

A classic BPF filter on the socket passes only RTM_DELLINK messages, so link changes
that are not deletions (a port going up or down, a new veth) wake no one. If the
socket's buffer overflows (ENOBUFS: deletions were lost), `read` says so and the caller
reconciles anyway.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import socket
import struct

from services.datapath.sockopts import attach_half_word_filter

log = logging.getLogger("weave.datapath.links")

RTMGRP_LINK = 1
RTM_DELLINK = 17
NLMSG_TYPE_OFFSET = 4


class LinkDeletions:
    """Deletions of links in the calling thread's network namespace, as they happen."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
        try:  # nlmsg_type is in host order; BPF reads big-endian
            attach_half_word_filter(self.sock, NLMSG_TYPE_OFFSET, int.from_bytes(struct.pack("=H", RTM_DELLINK), "big"))
            self.sock.bind((0, RTMGRP_LINK))
            self.sock.setblocking(False)
        except OSError:
            self.sock.close()
            raise
        self._seen = asyncio.Event()
        self._reading = False

    def fileno(self) -> int:
        return self.sock.fileno()

    async def next(self) -> None:
        """Return once a deletion has been seen (or may have been missed) since the last
        call; the event loop reads the socket meanwhile."""
        if not self._reading:
            asyncio.get_running_loop().add_reader(self.sock.fileno(), self._readable)
            self._reading = True
        await self._seen.wait()
        self._seen.clear()

    def _readable(self) -> None:
        if self.read():
            self._seen.set()

    def read(self) -> bool:
        """Take every waiting message; True if a deletion was seen or may have been
        missed (the buffer overflowed), False if there was nothing."""
        seen = False
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return seen
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    log.info("link notifications overflowed: reconciling")
                    seen = True
                    continue
                log.warning("link notifications: %s", exc)
                return seen
            if not data:
                return seen
            seen = True

    def close(self) -> None:
        if self._reading:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self._reading = False
        self.sock.close()
