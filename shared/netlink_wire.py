"""Netlink framing, sans-I/O: message headers and attributes (TLVs), as every netlink
family lays them out (linux/netlink.h). shared/rtnl.py builds rtnetlink on it.

Everything is in host byte order except where a family says otherwise; lengths are
padded to 4 bytes. Decoding never trusts a length: a message or attribute that runs
past its buffer ends the walk, it does not read beyond: with `MalformedNetlink`, or
quietly after what came before it (`strict=False`, for readers of kernel events that
keep what they can: services/npc/nflog.py, services/scope/probe/conntrack.py).
"""
from __future__ import annotations

import struct
from typing import Iterator

NLMSG_HDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
NLA_HDR = struct.Struct("=HH")  # len, type
NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE = 1, 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_ROOT, NLM_F_MATCH = 0x100, 0x200
NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE, NLM_F_APPEND = 0x100, 0x200, 0x400, 0x800
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF
_ERRNO = struct.Struct("=i")


class MalformedNetlink(ValueError):
    """A message or attribute whose length does not fit its buffer."""


def align(n: int) -> int:
    return (n + 3) & ~3


def message(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    return NLMSG_HDR.pack(NLMSG_HDR.size + len(body), kind, flags, seq, 0) + body


def attr(kind: int, data: bytes) -> bytes:
    """One attribute, padded to 4 bytes."""
    length = NLA_HDR.size + len(data)
    return NLA_HDR.pack(length, kind) + data + b"\0" * (align(length) - length)


def nested(kind: int, *attrs: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(attrs))


def messages(data: bytes | memoryview, *, strict: bool = True) -> Iterator[tuple[int, int, int, memoryview]]:
    """(type, flags, seq, body) of each message in one datagram."""
    view = memoryview(data)
    offset = 0
    while offset + NLMSG_HDR.size <= len(view):
        length, kind, flags, seq, _pid = NLMSG_HDR.unpack_from(view, offset)
        if length < NLMSG_HDR.size or offset + length > len(view):
            if not strict:
                return
            raise MalformedNetlink(f"netlink message of {length} bytes at {offset} in a {len(view)}-byte datagram")
        yield kind, flags, seq, view[offset + NLMSG_HDR.size:offset + length]
        offset += align(length)


def attrs(body: bytes | memoryview, offset: int = 0, *, strict: bool = True) -> Iterator[tuple[int, memoryview]]:
    """(type without flag bits, payload) of each attribute from `offset` on."""
    view = memoryview(body)
    while offset + NLA_HDR.size <= len(view):
        length, kind = NLA_HDR.unpack_from(view, offset)
        if length < NLA_HDR.size or offset + length > len(view):
            if not strict:
                return
            raise MalformedNetlink(f"netlink attribute of {length} bytes at {offset} in {len(view)} bytes")
        yield kind & NLA_TYPE_MASK, view[offset + NLA_HDR.size:offset + length]
        offset += align(length)


def error_code(body: memoryview) -> int:
    """The errno an NLMSG_ERROR carries (0: an acknowledgement)."""
    if len(body) < _ERRNO.size:
        raise MalformedNetlink("NLMSG_ERROR without its error code")
    return -_ERRNO.unpack_from(body)[0]


class Answer:
    """The kernel's answer to one request (sequence number `seq`), fed datagram by
    datagram: messages of other requests are skipped; an NLMSG_ERROR ends it (`error`
    0 for an acknowledgement), so does NLMSG_DONE, and for a request that is not a dump
    so does its one message that is not multi-part."""

    def __init__(self, seq: int, dump: bool) -> None:
        self.seq, self.dump = seq, dump
        self.messages: list[tuple[int, memoryview]] = []
        """(type, body) of each message of the answer, in order."""
        self.error = 0
        self.done = False

    def feed(self, data: bytes | memoryview) -> bool:
        """Take one datagram; True once the answer is complete."""
        for kind, flags, seq, body in messages(data):
            if seq != self.seq or kind == NLMSG_NOOP:
                continue
            if kind == NLMSG_ERROR:
                self.error = error_code(body)
            elif kind != NLMSG_DONE:
                self.messages.append((kind, body))
                if self.dump or flags & NLM_F_MULTI:
                    continue
            self.done = True
            break
        return self.done
