"""Sleeve packet framing (weave:router/sleeve.go, weave:router/frame_crypto.go), sans-I/O.

Wire format of one UDP payload, plaintext:

    [6-byte name of the sending peer]
    then zero or more frames, each:
    [6-byte capturing (source) peer][6-byte destination peer][uint16 BE length][frame]

A body is valid only if it splits exactly into whole frames: a frame header whose
length runs past the end ("truncated_frame") or 1..13 bytes left over after the last
frame ("trailing_garbage") make the whole packet invalid. Weave's Go decoder hands
over the frames before the bad spot and then reports the error; we reject the packet
as a whole (spec §4: "packet dropped"), so no frame of a corrupt packet is acted on.

Special frames are made by the routers themselves, never captured: a 14-byte all-zero
Ethernet header (zero MACs, length/type 0), told apart by their total length:
- heartbeat: 14 + 8 bytes, the 8 bytes = connection UID (BE);
- fragmentation test: 60001 zero bytes;
- anything else: MTU test, length = MTU candidate + 14.

Peer names are ints here (PeerName is an int subclass), so a decoded name can be
looked up directly in routes and forwarder tables.
"""
from __future__ import annotations

import struct
from typing import Protocol

from shared.errors import RemoteProtocolError

NAME_SIZE = 6
"""Bytes of a peer name on the wire."""
FRAME_OVERHEAD = NAME_SIZE + NAME_SIZE + 2
"""Per-frame header: source peer, destination peer, length."""
ETHERNET_OVERHEAD = 14
UDP_OVERHEAD = 28
"""IPv4 (20) + UDP (8) header bytes in front of every sleeve payload."""
MAX_UDP_PACKET_SIZE = 65535
MAX_UDP_PAYLOAD = MAX_UDP_PACKET_SIZE - UDP_OVERHEAD
"""Largest payload one (fragmented) UDP datagram can carry: the non-DF limit."""
DEFAULT_MTU = 65535
"""Overlay MTU assumed before PMTU discovery has a figure."""
FRAG_TEST_SIZE = 60001
PMTU_DISCOVERY_SIZE = 60000
"""Size of the DF probe that makes the kernel report EMSGSIZE and the path MTU."""
HEARTBEAT_SIZE = ETHERNET_OVERHEAD + 8
MAX_FRAMES_PER_PACKET = 100
"""Frames batched into one datagram at most (weave aggregateAndSend)."""

_HEADER = struct.Struct(">HIHIH")
"""Frame header as (src high 16, src low 32, dst high 16, dst low 32, length)."""
_NAME = struct.Struct(">HI")
_ZERO_HEADER = bytes(ETHERNET_OVERHEAD)
_LOW32 = 0xFFFFFFFF


class FrameDecodingError(RemoteProtocolError):
    """A sleeve packet from a peer that does not split into frames. `reason` is a
    short drop-counter key, `offset` the byte offset in the body where it broke."""

    def __init__(self, reason: str, detail: str, offset: int) -> None:
        super().__init__(f"failed to decode packet: {detail}", code=reason, offset=offset)
        self.reason = reason
        self.offset = offset


def name_bytes(name: int) -> bytes:
    """The 6 wire bytes of a peer name."""
    return _NAME.pack(name >> 32, name & _LOW32)


def frame_header(src: int, dst: int, length: int) -> bytes:
    """The 14-byte header that precedes a frame of `length` bytes."""
    return _HEADER.pack(src >> 32, src & _LOW32, dst >> 32, dst & _LOW32, length)


def split_packet(packet: bytes | memoryview) -> tuple[int, memoryview]:
    """(sender peer name, body) of a received UDP payload.

    The body is a memoryview into `packet` (no copy). Fewer than 6 bytes is a
    FrameDecodingError("short_packet").
    """
    if len(packet) < NAME_SIZE:
        raise FrameDecodingError("short_packet", f"{len(packet)} bytes, no sender name", 0)
    hi, lo = _NAME.unpack_from(packet)
    return (hi << 32) | lo, memoryview(packet)[NAME_SIZE:]


def iterate_frames(body: bytes | memoryview) -> list[tuple[int, int, memoryview]]:
    """Every (source peer, destination peer, frame) of a plaintext body, in order.

    Frames are memoryviews into `body`; nothing is copied. Raises FrameDecodingError
    ("truncated_frame" or "trailing_garbage") if the body does not split exactly.
    """
    view = memoryview(body)
    end = len(view)
    unpack = _HEADER.unpack_from
    frames = []
    pos = 0
    while end - pos >= FRAME_OVERHEAD:
        sh, sl, dh, dl, length = unpack(view, pos)
        pos += FRAME_OVERHEAD
        if end - pos < length:
            raise FrameDecodingError(
                "truncated_frame",
                f"too short; expected frame of length {length}, got {end - pos}",
                pos - FRAME_OVERHEAD,
            )
        frames.append(((sh << 32) | sl, (dh << 32) | dl, view[pos : pos + length]))
        pos += length
    if pos != end:
        raise FrameDecodingError("trailing_garbage", f"{end - pos} octets of trailing garbage", pos)
    return frames


def is_special(frame: bytes | memoryview) -> bool:
    """True for router-made frames (zero Ethernet header). Frames shorter than an
    Ethernet header are neither special nor forwardable (weave decodes no layer)."""
    return len(frame) >= ETHERNET_OVERHEAD and frame[:ETHERNET_OVERHEAD] == _ZERO_HEADER


def heartbeat_frame(conn_uid: int) -> bytes:
    """Heartbeat special frame: zero header + connection UID (uint64 BE)."""
    return _ZERO_HEADER + conn_uid.to_bytes(8, "big")


def heartbeat_uid(frame: bytes | memoryview) -> int:
    """Connection UID carried by a heartbeat frame (caller checked the length)."""
    return int.from_bytes(frame[ETHERNET_OVERHEAD:HEARTBEAT_SIZE], "big")


def frag_test_frame() -> bytes:
    return bytes(FRAG_TEST_SIZE)


def pmtu_discovery_frame() -> bytes:
    return bytes(PMTU_DISCOVERY_SIZE)


def mtu_test_frame(candidate: int) -> bytes:
    """MTU verification frame for an overlay MTU `candidate`: candidate + 14 zeros."""
    return bytes(candidate + ETHERNET_OVERHEAD)


def all_zeros(frame: bytes | memoryview) -> bool:
    return frame == bytes(len(frame))


class Packer(Protocol):
    """Builds one sleeve packet from frames: PlainPacker or crypto.NaClPacker."""

    packet_overhead: int
    """Bytes a packet carries besides its frames and their headers."""
    count: int
    """Frames in the packet being built."""

    def total_len(self) -> int:
        """UDP payload length of the packet if it were flushed now."""

    def append_frame(self, src: int, dst: int, frame: bytes | memoryview) -> None:
        """Add a frame (copied in) with its src/dst peer header."""

    def flush(self) -> bytes | bytearray:
        """The finished packet; the packer starts a new one."""


class PlainPacker:
    """Batches frames into one unencrypted sleeve packet (weave NonEncryptor).

    `total_len()` is the UDP payload length so far (sender name included); a frame of
    n bytes adds FRAME_OVERHEAD + n. Frames are copied in on append, so the caller may
    reuse its buffers at once. `flush()` hands over the payload (a bytearray nobody
    else holds) and starts afresh.
    """

    packet_overhead = NAME_SIZE
    frame_overhead = FRAME_OVERHEAD

    def __init__(self, sender: int) -> None:
        self._prefix = name_bytes(sender)
        self._buf = bytearray(self._prefix)
        self.count = 0
        """Frames in the packet being built."""

    def total_len(self) -> int:
        return len(self._buf)

    def append_frame(self, src: int, dst: int, frame: bytes | memoryview) -> None:
        buf = self._buf
        buf += _HEADER.pack(src >> 32, src & _LOW32, dst >> 32, dst & _LOW32, len(frame))
        buf += frame
        self.count += 1

    def flush(self) -> bytearray:
        out = self._buf
        self._buf = bytearray(self._prefix)
        self.count = 0
        return out
