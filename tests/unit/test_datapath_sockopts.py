"""The datapath's shared socket options on real loopback sockets: the drop-all filter
(the sleeve's send-only DF sockets), the half-word match, and buffers set only in the
directions asked for."""
from __future__ import annotations

import socket

from services.datapath.sockopts import attach_drop_all, attach_half_word_filter, big_buffers


def pair(filter_=None):
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    if filter_:
        filter_(rx)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    return rx, tx


def received(rx, tx, payloads):
    for p in payloads:
        tx.sendto(p, rx.getsockname())
    got = []
    while True:
        try:
            got.append(rx.recv(100))
        except BlockingIOError:
            return got


def test_drop_all_receives_nothing_and_the_half_word_match_only_its_value():
    # a UDP socket's filter sees the datagram from its UDP header on: the payload starts at 8
    for filter_, want in ((None, [b"\x00\x07a", b"\x00\x08b"]), (attach_drop_all, []),
                          (lambda s: attach_half_word_filter(s, 8, 7), [b"\x00\x07a"])):
        rx, tx = pair(filter_)
        with rx, tx:
            assert received(rx, tx, [b"\x00\x07a", b"\x00\x08b"]) == want, filter_


def test_big_buffers_set_only_the_directions_asked_for():
    def sizes(s):
        return s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF), s.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as plain, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx_only, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx_only:
        rcv0, snd0 = sizes(plain)
        big_buffers(rx_only, 4 << 20, send=False)
        big_buffers(tx_only, 4 << 20, receive=False)
        assert sizes(rx_only)[0] > rcv0 and sizes(rx_only)[1] == snd0
        assert sizes(tx_only)[0] == rcv0 and sizes(tx_only)[1] > snd0
