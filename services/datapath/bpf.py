"""One classic BPF socket filter, the only kind the datapath needs: pass a packet whose
16-bit word at a given offset has a given value, drop the rest (SO_ATTACH_FILTER).
The fastpath's heartbeat socket matches the Ethernet type; the link watcher matches
the netlink message type."""
from __future__ import annotations

import ctypes
import socket

SO_ATTACH_FILTER = 26


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


def attach_half_word_filter(sock: socket.socket, offset: int, value: int) -> None:
    """Pass only packets whose 16-bit word at `offset` is `value`. BPF loads words
    big-endian: give a field in host order (netlink's) byte-swapped to that reading."""
    prog = (_SockFilter * 4)(
        _SockFilter(0x28, 0, 0, offset),  # ldh [offset]
        _SockFilter(0x15, 0, 1, value),  # jeq #value
        _SockFilter(0x06, 0, 0, 0xFFFFFFFF),  # ret: the whole packet
        _SockFilter(0x06, 0, 0, 0))  # ret #0: dropped
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(_SockFprog(4, prog)))  # the kernel copies `prog`
