"""The little Ethernet/IPv4 knowledge sleeve forwarding needs
(weave:router/ethernet_decoder.go, weave:router/sleeve.go `fragment`), sans-I/O.

Weave decodes at most two layers with gopacket: Ethernet, then IPv4 if the EtherType
is exactly 0x0800. We mirror what that decoder accepts:
- a frame shorter than 14 bytes decodes to nothing and is dropped;
- IPv4 counts as decoded when at least 20 bytes follow the Ethernet header, the total
  length is >= 20, IHL >= 5, IHL*4 <= total length, and the whole header is present
  (a truncated payload is fine). IP options are not validated (gopacket does; a frame
  with malformed options is treated here as IPv4, there as non-IP).
The DF flag only matters for decoded IPv4 frames; every other frame rides the
non-DF channel.

Frames we synthesise:
- ICMP "fragmentation needed" (type 3 code 4) for a DF frame larger than the overlay
  MTU: addressed back to the sender (MACs and IPs swapped, TOS kept, ID 0, no flags,
  TTL 64), quoting the original IP header + 8 bytes, the MTU in the low 16 bits of the
  ICMP "rest of header" (RFC 1191), both checksums computed.
- IPv4 fragments of a non-DF frame too large for the MTU, when the kernel cannot be
  trusted to fragment (no FragmentationReceived yet): the original header is copied
  (options included) with MF/offset/length/checksum patched; each fragment payload is
  a multiple of 8 bytes except the last; frames are padded to 60 bytes like gopacket.
"""
from __future__ import annotations

import struct

ETHERNET_HEADER = 14
ETHERTYPE_IPV4 = 0x0800
MIN_FRAME = 60
"""Ethernet frames shorter than this (without FCS) are zero-padded on serialisation."""
STP_MAC = bytes.fromhex("0180c2000000")
"""Spanning-tree bridge group address: such frames are never forwarded."""
ICMP_FRAG_NEEDED = (3, 4)
ICMP_QUOTE_EXTRA = 8
"""Payload bytes after the original IP header quoted in the ICMP error."""

_MACS = struct.Struct("6s6s")
_IP_DF = 0x40
"""DF bit in byte 6 of the IPv4 header."""
_FLAG_MF = 0b001
"""MF in the 3-bit IPv4 flags field (reserved, DF, MF)."""
_IP_FLAGS_SHIFT = 13
_IP_PROTO_ICMP = 1
_TTL = 64


def macs(frame: bytes | memoryview) -> tuple[bytes, bytes]:
    """(destination MAC, source MAC) of a frame of at least 14 bytes."""
    return _MACS.unpack_from(frame)


def ipv4_header_len(frame: bytes | memoryview) -> int:
    """IHL*4 if the frame carries a decodable IPv4 header (rules above), else 0."""
    if len(frame) < ETHERNET_HEADER + 20 or frame[12] != 0x08 or frame[13] != 0x00:
        return 0
    ihl = (frame[ETHERNET_HEADER] & 0x0F) * 4
    total = (frame[ETHERNET_HEADER + 2] << 8) | frame[ETHERNET_HEADER + 3]
    if total < 20 or ihl < 20 or ihl > total or ETHERNET_HEADER + ihl > len(frame):
        return 0
    return ihl


def is_df(frame: bytes | memoryview) -> bool:
    """True for a decodable IPv4 frame with Don't Fragment set (weave dec.DF())."""
    return ipv4_header_len(frame) != 0 and bool(frame[ETHERNET_HEADER + 6] & _IP_DF)


def frame_too_big(frame: bytes | memoryview, mtu: int) -> bool:
    """MTUs count from the IP header: a frame may be mtu + 14 bytes long."""
    return len(frame) > mtu + ETHERNET_HEADER


def checksum(data: bytes | bytearray | memoryview) -> int:
    """RFC 1071 Internet checksum (one's complement of the one's complement sum)."""
    if len(data) % 2:
        data = bytes(data) + b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def icmp_frag_needed(frame: bytes | memoryview, mtu: int) -> bytes:
    """ICMP 3/4 frame answering the DF IPv4 `frame` (caller checked it is one)."""
    ip = memoryview(frame)[ETHERNET_HEADER:]
    ihl = ipv4_header_len(frame)
    quote = bytes(ip[: ihl + ICMP_QUOTE_EXTRA])
    icmp = bytearray(struct.pack("!BBHHH", 3, 4, 0, 0, mtu & 0xFFFF) + quote)
    struct.pack_into("!H", icmp, 2, checksum(icmp))
    header = bytearray(20)
    struct.pack_into(
        "!BBHHHBBH4s4s", header, 0,
        0x45, ip[1], 20 + len(icmp), 0, 0, _TTL, _IP_PROTO_ICMP, 0,
        bytes(ip[16:20]), bytes(ip[12:16]),
    )
    struct.pack_into("!H", header, 10, checksum(header))
    dst_mac, src_mac = macs(frame)
    return _pad(src_mac + dst_mac + bytes(frame[12:14]) + header + icmp)


def fragment(frame: bytes | memoryview, mtu: int) -> list[bytes]:
    """IPv4 fragments of `frame` that each fit `mtu`; [] if the MTU leaves no room
    for even 8 bytes of payload. The caller checked it is a decodable IPv4 frame."""
    view = memoryview(frame)
    ihl = ipv4_header_len(frame)
    ip = view[ETHERNET_HEADER:]
    total = (ip[2] << 8) | ip[3]
    segment = (mtu - ihl) & ~7
    if segment <= 0:
        return []
    payload = ip[ihl:total]
    flags_frag = (ip[6] << 8) | ip[7]
    orig_flags = flags_frag >> _IP_FLAGS_SHIFT
    base = (flags_frag & 0x1FFF) << 3
    eth, header = bytes(view[:ETHERNET_HEADER]), bytearray(ip[:ihl])
    out = []
    for offset in range(0, len(payload), segment):
        chunk = payload[offset : offset + segment]
        last = offset + segment >= len(payload)
        flags = orig_flags if last else orig_flags | _FLAG_MF
        out.append(eth + _ip_fragment_header(header, ihl + len(chunk), flags, base + offset) + chunk)
    return [_pad(f) for f in out]


def _ip_fragment_header(header: bytearray, length: int, flags: int, offset: int) -> bytes:
    struct.pack_into("!H", header, 2, length)
    struct.pack_into("!H", header, 6, (flags << _IP_FLAGS_SHIFT) | (offset >> 3))
    struct.pack_into("!H", header, 10, 0)
    struct.pack_into("!H", header, 10, checksum(header))
    return bytes(header)


def _pad(frame: bytes) -> bytes:
    return frame if len(frame) >= MIN_FRAME else frame + bytes(MIN_FRAME - len(frame))
