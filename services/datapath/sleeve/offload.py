"""Offloaded frames: what the kernel's virtio-net header says about a captured frame,
and how such a frame travels (sans-I/O).

Why: containers keep the kernel's offloads on (TSO/GSO, tx checksum), so one TCP
"superframe" of up to GSO_MAX_SIZE bytes stands for dozens of MTU-sized segments and
its checksum is left for "hardware" to fill in. The datapath captures with
PACKET_VNET_HDR, so every frame comes with a 10-byte virtio_net_hdr
(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset; host byte order).
Moving one superframe instead of forty frames is what makes a userspace sleeve fast
(reference/baseline.md: ~160 k frames/s is the Python ceiling).

How a frame with a non-trivial header (NEEDS_CSUM or a GSO type) leaves us:
- to a peer that said it takes offloaded frames (a weave-py peer: control message
  OFFLOAD, forwarder.py) when it is the frame's destination peer (no relay) and its
  kernel reassembles our fragments (stack_frag): as one *marked* frame on the non-DF
  channel, the header carried inside the Ethernet frame:
      [dst MAC][src MAC][0x88B5][virtio_net_hdr, 10 bytes][original EtherType][payload]
  (0x88B5 is IEEE 802's "local experimental" EtherType, so a stray marked frame is
  junk to anyone else, never a valid packet). The receiver strips the mark and
  injects the frame with the header: its kernel segments or checksums as needed.
- to anyone else (a Weave Net 2.8 peer, a relay, before the frag test): `resolve`
  turns it into ordinary frames, checksums completed and GSO frames segmented
  (TCP over IPv4/IPv6, UDP_L4), exactly what the wire would have carried had the
  container's offloads been off. Other GSO types are dropped (counted).
The inner-DF rule applies per segment: a DF superframe whose segments exceed the
overlay MTU is answered with ICMP "fragmentation needed" like any big DF frame.
"""
from __future__ import annotations

import struct

VNET_LEN = 10
ZERO_VNET = bytes(VNET_LEN)
F_NEEDS_CSUM = 1
GSO_NONE, GSO_TCPV4, GSO_UDP, GSO_TCPV6, GSO_UDP_L4 = 0, 1, 3, 4, 5
GSO_ECN = 0x80
MARK = b"\x88\xb5"
MARK_OVERHEAD = len(MARK) + VNET_LEN
GSO_MAX_SIZE = 64000
"""gso_max_size set on container interfaces. The largest superframe whose marked sleeve
datagram (+ NaCl) still fits one segment train send over a 1500-byte underlay: 44
datagrams of 1472 bytes (train.py), so the peer reads it whole in one GRO read. The
kernel's default, 65536, needs a second send of one segment, which the peer must
reassemble across reads (measured: 8.1 -> 5.5 Gbit/s). Bigger ones (a smaller path
MTU) still travel, as longer trains; to a peer without trains a marked datagram over
65507 bytes is resolved into ordinary frames. (It was 60000, to fit one unfragmented-
at-the-socket datagram: the fastpath, which the same containers use, moved ~5 % less.)"""

_VNET = struct.Struct("=BBHHHH")
_ETH = 14
_ETHERTYPE_IPV4, _ETHERTYPE_IPV6 = 0x0800, 0x86DD
_PROTO_TCP, _PROTO_UDP = 6, 17
_TCP_FIN, _TCP_PSH, _TCP_CWR = 0x01, 0x08, 0x80


class OffloadError(ValueError):
    """A frame whose virtio-net header we cannot honour (bad offsets, unknown GSO type)."""


def is_plain(vnet: bytes | memoryview) -> bool:
    """True when the header asks for nothing (no checksum to finish, no GSO)."""
    return vnet[0] == 0 and vnet[1] == 0


def mark(frame: bytes | memoryview, vnet: bytes | memoryview) -> bytes:
    """The marked form of `frame` (module docstring)."""
    return b"".join((frame[:12], MARK, vnet, frame[12:]))


def is_marked(frame: bytes | memoryview) -> bool:
    return len(frame) >= _ETH + MARK_OVERHEAD and frame[12:14] == MARK


def unmark(frame: bytes | memoryview) -> tuple[bytes, bytes]:
    """(virtio_net_hdr, frame) of a marked frame (caller checked `is_marked`)."""
    return bytes(frame[14:24]), b"".join((frame[:12], frame[24:]))


def segment_ip_len(frame: bytes | memoryview, vnet: bytes | memoryview) -> int:
    """IP-level length of the largest packet `frame` stands for: the frame itself, or
    for GSO the headers plus one gso_size segment."""
    flags, gso_type, hdr_len, gso_size, csum_start, _ = _VNET.unpack_from(vnet)
    whole = len(frame) - _ETH
    if gso_type & ~GSO_ECN == GSO_NONE or not gso_size:
        return whole
    try:
        return min(whole, _headers_len(frame, gso_type & ~GSO_ECN, csum_start) - _ETH + gso_size)
    except (IndexError, struct.error) as exc:
        raise OffloadError(f"malformed GSO frame: {exc}") from exc


def resolve(frame: bytes | memoryview, vnet: bytes | memoryview) -> list[bytes]:
    """Ordinary frames for `frame`: checksum finished, GSO segmented. OffloadError if
    the header is malformed or asks for an offload we do not implement."""
    flags, gso_type, _, gso_size, csum_start, csum_offset = _VNET.unpack_from(vnet)
    gso = gso_type & ~GSO_ECN
    if gso == GSO_NONE:
        if not flags & F_NEEDS_CSUM:
            return [bytes(frame)]
        return [_finish_checksum(frame, csum_start, csum_offset)]
    if gso not in (GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4) or not gso_size:
        raise OffloadError(f"unsupported GSO type {gso_type} (gso_size {gso_size})")
    try:
        return _segment(frame, gso, gso_size, csum_start)
    except (IndexError, struct.error) as exc:  # headers cut short in a way not checked above
        raise OffloadError(f"malformed GSO frame: {exc}") from exc


# -- checksums -------------------------------------------------------------------------
def ones_sum(data: bytes | memoryview) -> int:
    """One's complement sum of 16-bit big-endian words, folded (0 stands for 0xFFFF too:
    both are one's complement zero). Uses 2^16 = 1 (mod 0xFFFF): the sum of the words
    is the number's value modulo 0xFFFF, computed in C."""
    if len(data) & 1:
        data = bytes(data) + b"\x00"
    return int.from_bytes(data, "big") % 0xFFFF


def checksum(*parts: bytes | memoryview) -> int:
    """Internet checksum of the concatenated parts (each of even length but the last)."""
    total = sum(ones_sum(p) for p in parts) % 0xFFFF
    return ~total & 0xFFFF


def _finish_checksum(frame: bytes | memoryview, start: int, offset: int) -> bytes:
    """CHECKSUM_PARTIAL: the field holds the pseudo-header sum; fold in [start, end)."""
    at = start + offset
    if start < _ETH or at + 2 > len(frame):
        raise OffloadError(f"checksum offsets {start}+{offset} outside a {len(frame)}-byte frame")
    out = bytearray(frame)
    struct.pack_into("!H", out, at, checksum(memoryview(out)[start:]))
    return bytes(out)


# -- segmentation ----------------------------------------------------------------------
def _headers_len(frame: bytes | memoryview, gso: int, csum_start: int) -> int:
    """Ethernet + IP + L4 header bytes of a GSO frame (from the packet, not hdr_len,
    which some senders leave as a hint)."""
    l4 = _l4_offset(frame, csum_start)
    hlen = l4 + (8 if gso == GSO_UDP_L4 else (frame[l4 + 12] >> 4) * 4)
    if hlen > len(frame) or hlen - l4 < 8:
        raise OffloadError(f"GSO frame of {len(frame)} bytes shorter than its headers")
    return hlen


def _l4_offset(frame: bytes | memoryview, csum_start: int) -> int:
    """Where the L4 header starts: csum_start when the kernel gave one, else after a
    plain IPv4/IPv6 header."""
    ethertype = (frame[12] << 8) | frame[13] if len(frame) >= _ETH else 0
    if ethertype not in (_ETHERTYPE_IPV4, _ETHERTYPE_IPV6) or len(frame) < _ETH + 20:
        raise OffloadError(f"GSO frame with EtherType {ethertype:#06x} or without an IP header")
    floor = _ETH + (20 if ethertype == _ETHERTYPE_IPV4 else 40)
    if csum_start:
        if csum_start < floor:
            raise OffloadError(f"csum_start {csum_start} inside the IP header")
        return csum_start
    return _ETH + max(20, (frame[_ETH] & 0x0F) * 4) if ethertype == _ETHERTYPE_IPV4 else floor


def _segment(frame: bytes | memoryview, gso: int, gso_size: int, csum_start: int) -> list[bytes]:
    view = memoryview(frame)
    v4 = (view[12] << 8 | view[13]) == _ETHERTYPE_IPV4
    tcp = gso != GSO_UDP_L4
    hlen = _headers_len(view, gso, csum_start)
    l4 = _l4_offset(view, csum_start)
    eth, ip, l4h = bytes(view[:_ETH]), bytearray(view[_ETH:l4]), bytearray(view[l4:hlen])
    payload = view[hlen:]
    src, dst = (bytes(ip[12:16]), bytes(ip[16:20])) if v4 else (bytes(ip[8:24]), bytes(ip[24:40]))
    ip_id = struct.unpack_from("!H", ip, 4)[0] if v4 else 0
    seq = struct.unpack_from("!I", l4h, 4)[0] if tcp else 0
    flags = l4h[13] if tcp else 0
    count = max(1, -(-len(payload) // gso_size))
    out = []
    for i in range(count):
        chunk = payload[i * gso_size:(i + 1) * gso_size]
        l4len = len(l4h) + len(chunk)
        if v4:
            struct.pack_into("!HH", ip, 2, len(ip) + l4len, (ip_id + i) & 0xFFFF)
            struct.pack_into("!H", ip, 10, 0)
            struct.pack_into("!H", ip, 10, checksum(ip))
        else:
            struct.pack_into("!H", ip, 4, len(ip) - 40 + l4len)
        if tcp:
            struct.pack_into("!I", l4h, 4, (seq + i * gso_size) & 0xFFFFFFFF)
            f = flags if i == count - 1 else flags & ~(_TCP_FIN | _TCP_PSH)
            l4h[13] = f if i == 0 else f & ~_TCP_CWR
            at = 16
        else:
            struct.pack_into("!H", l4h, 4, l4len)
            at = 6
        struct.pack_into("!H", l4h, at, 0)
        proto = _PROTO_TCP if tcp else _PROTO_UDP
        pseudo = src + dst + (struct.pack("!BBH", 0, proto, l4len) if v4 else struct.pack("!I3xB", l4len, proto))
        struct.pack_into("!H", l4h, at, checksum(pseudo, l4h, chunk))
        out.append(b"".join((eth, ip, l4h, chunk)))
    return out
