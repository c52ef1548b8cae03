"""Socket options the datapath's sockets share: classic BPF filters (SO_ATTACH_FILTER)
and buffer sizes past the sysctl caps.

- `attach_half_word_filter`: pass a packet whose 16-bit word at an offset has a given
  value (the fastpath's heartbeat socket: the Ethernet type; the link watcher: the
  netlink message type), drop the rest;
- `attach_drop_all`: receive nothing (the sleeve's send-only raw DF sockets);
- `big_buffers`: SO_RCVBUFFORCE / SO_SNDBUFFORCE (root) lift net.core.rmem_max and
  wmem_max; without root, the plain options (capped by the kernel).
"""
from __future__ import annotations

import ctypes
import socket

SO_ATTACH_FILTER = 26
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


def _attach(sock: socket.socket, *program: _SockFilter) -> None:
    prog = (_SockFilter * len(program))(*program)
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(_SockFprog(len(program), prog)))  # copied by the kernel


def attach_half_word_filter(sock: socket.socket, offset: int, value: int) -> None:
    """Pass only packets whose 16-bit word at `offset` is `value`. BPF loads words
    big-endian: give a field in host order (netlink's) byte-swapped to that reading."""
    _attach(sock,
            _SockFilter(0x28, 0, 0, offset),  # ldh [offset]
            _SockFilter(0x15, 0, 1, value),  # jeq #value
            _SockFilter(0x06, 0, 0, 0xFFFFFFFF),  # ret: the whole packet
            _SockFilter(0x06, 0, 0, 0))  # ret #0: dropped


def attach_drop_all(sock: socket.socket) -> None:
    """Receive nothing on `sock` (a send-only raw socket would otherwise get a copy of
    every matching packet)."""
    _attach(sock, _SockFilter(0x06, 0, 0, 0))  # ret #0


def big_buffers(sock: socket.socket, size: int, receive: bool = True, send: bool = True) -> None:
    """Receive and/or send buffers of `size` bytes, past the sysctl caps when root."""
    for wanted, force, plain in ((receive, SO_RCVBUFFORCE, socket.SO_RCVBUF), (send, SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        if not wanted:
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, plain, size)
