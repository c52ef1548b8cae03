"""Segment trains: one large sleeve datagram carried as a train of path-MTU-sized UDP
datagrams sent with UDP GSO, between weave-py peers only (sans-I/O).

Why: a sleeve payload bigger than the path MTU (an offloaded superframe, ~60 KB) sent
as one datagram is split by the kernel into ~42 IP fragments, each crossing the
underlay and reassembled at the far end. Profiling the sending datapath under iperf3
showed ~59 % of its time in that `sendto`. With UDP GSO (UDP_SEGMENT) one `sendmsg`
hands the kernel the whole train as one buffer that it cuts into datagrams only where
a device needs it (not at all between veths), and with UDP_GRO the receiving socket
gets the train back in one read. A prototype moved 18 vs 11.8 Gbit/s at a third of the
sender's CPU per byte (docs/decisions.md).

Format: every datagram of a train is

    [6 zero bytes][version 1][count][train id, u32 BE][index] + a chunk of the payload

Six zero bytes are mesh's UnknownPeerName, which no sleeve packet starts with (each
starts with its sender's peer name), so a receiver tells a train segment from a sleeve
datagram by its first bytes. All segments but the last are exactly the segment size the
sender chose (the path's UDP payload limit), so a GRO read of several segments splits
at that size. The payload, once whole, is an ordinary sleeve datagram (encrypted when
the connection is) and is handled as if it had arrived in one piece: the train adds
no trust, a forged train is just a forged datagram.

Peers agree with the sleeve's OFFLOAD control flags (forwarder.OFFLOAD_TRAINS); Weave
Net peers never get trains. A train that loses a segment is dropped whole, like a
datagram that loses a fragment; at most MAX_PENDING incomplete trains are kept.
"""
from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Hashable

MAGIC = bytes(6)
VERSION = 1
_PREFIX = struct.Struct(">6sBBI")
PREFIX_LEN = _PREFIX.size
"""Bytes common to every segment of one train (zero name, version, count, id)."""
HEADER_LEN = PREFIX_LEN + 1
"""Prefix + the segment's index."""
MAX_SEGMENTS = 255
PER_SEND = 64
"""Segments per sendmsg: UDP_MAX_SEGMENTS of kernels before 6.x (128 since)."""
MAX_SEND_BYTES = 65507
"""One GSO send is one UDP datagram to the kernel: at most 65507 bytes of payload."""
MAX_PENDING = 16
"""Incomplete trains kept (per receiver); the oldest is dropped beyond this."""
_INDEX = [bytes((i,)) for i in range(MAX_SEGMENTS)]
_INDEXES = bytes(range(MAX_SEGMENTS))
_REPEATS = [bytes((b,)) * MAX_SEGMENTS for b in range(256)]


def is_segment(datagram: bytes | memoryview) -> bool:
    """A train segment (of a version we read) rather than a sleeve datagram."""
    return len(datagram) > HEADER_LEN and datagram[:6] == MAGIC and datagram[6] == VERSION


class TrainSender:
    """Cuts payloads into trains; numbers them (per sender, wrapping)."""

    def __init__(self) -> None:
        self.next_id = 0
        self.sent = 0
        """Trains cut (for metrics)."""

    def sends(self, payload: bytes | bytearray | memoryview, seg: int) -> list[list[bytes | memoryview]] | None:
        """The iovec lists of the `sendmsg` calls (each with UDP_SEGMENT = seg) that carry
        `payload` as one train; None if it needs no train (fits one segment) or cannot
        be one (more than MAX_SEGMENTS segments, or a segment size with no room)."""
        cap = seg - HEADER_LEN
        size = len(payload)
        if cap <= 0 or size <= seg:
            return None
        count = -(-size // cap)
        if count > MAX_SEGMENTS:
            return None
        train_id = self.next_id
        self.next_id = (train_id + 1) & 0xFFFFFFFF
        self.sent += 1
        prefix = _PREFIX.pack(MAGIC, VERSION, count, train_id)
        view = memoryview(payload)
        iov: list[bytes | memoryview | None] = [prefix, None, None] * count  # prefix, index, chunk
        iov[1::3] = _INDEX[:count]
        iov[2::3] = [view[o:o + cap] for o in range(0, size, cap)]
        step = 3 * max(1, min(PER_SEND, MAX_SEND_BYTES // seg))
        return [iov] if len(iov) <= step else [iov[i:i + step] for i in range(0, len(iov), step)]


class _Partial:
    __slots__ = ("count", "chunks", "have")

    def __init__(self, count: int) -> None:
        self.count = count
        self.chunks: list[bytes | None] = [None] * count
        self.have = 0


class Reassembler:
    """Trains back into payloads. `feed` takes one read from the socket: `n` bytes of
    `buf` that are one datagram, or (`seg` > 0, a GRO read) several of `seg` bytes
    each, the last possibly shorter. It returns, in order, what the read carried:
    sleeve datagrams (views into `buf`, valid until the next read) and completed train
    payloads (bytes). Broken segments are counted in `drops` and skipped."""

    def __init__(self, max_pending: int = MAX_PENDING) -> None:
        self.max_pending = max_pending
        self.pending: dict[tuple[Hashable, int], _Partial] = {}
        self.drops: Counter[str] = Counter()
        self.trains = 0
        """Trains completed."""
        self.whole = 0
        """Of them, found whole in one read (the fast path)."""

    def feed(self, buf: memoryview, n: int, seg: int, sender: Hashable) -> list[bytes | memoryview]:
        if not seg and buf[0] != 0:  # the common case: one sleeve datagram (a segment starts with 0)
            return [buf[:n]]
        out: list[bytes | memoryview] = []
        if not seg or n <= seg:
            datagram = buf[:n]
            if is_segment(datagram):
                self._segment(datagram, sender, out)
            else:
                out.append(datagram)
            return out
        off = 0
        while off < n:
            end = min(off + seg, n)
            datagram = buf[off:end]
            if not is_segment(datagram):
                out.append(datagram)
                off = end
                continue
            whole = self._whole_train(buf, off, n, seg)
            if whole:
                out.append(whole[0])
                off = whole[1]
                self.trains += 1
                self.whole += 1
                continue
            self._segment(datagram, sender, out)
            off = end
        return out

    def _whole_train(self, buf: memoryview, off: int, n: int, seg: int) -> tuple[bytes, int] | None:
        """Fast path: a train's segments 0..count-1 all in this read, in order. The
        headers sit every `seg` bytes, so each header byte is checked for all segments
        at once with a strided slice."""
        count = buf[off + 7]
        last = off + (count - 1) * seg  # where its last segment starts
        if count == 0 or last + HEADER_LEN >= n:
            return None
        stop = last + HEADER_LEN  # takes header byte k of every segment, the last one's too
        if buf[off + PREFIX_LEN:stop:seg] != _INDEXES[:count]:
            return None
        for k in range(PREFIX_LEN):
            if buf[off + k:stop:seg] != _REPEATS[buf[off + k]][:count]:
                return None
        end = min(last + seg, n)
        chunks = [buf[start:start + seg - HEADER_LEN] for start in range(off + HEADER_LEN, last, seg)]
        chunks.append(buf[last + HEADER_LEN:end])
        return b"".join(chunks), end

    def _segment(self, datagram: memoryview, sender: Hashable, out: list) -> None:
        """Slow path: one segment, kept until its train is complete."""
        _, _, count, train_id = _PREFIX.unpack_from(datagram)
        index = datagram[PREFIX_LEN]
        if count == 0 or index >= count:
            self.drops["train_bad_index"] += 1
            return
        if count == 1:
            self.trains += 1
            out.append(bytes(datagram[HEADER_LEN:]))
            return
        key = (sender, train_id)
        part = self.pending.get(key)
        if part is None or part.count != count:
            if part is not None:
                self.drops["train_incomplete"] += 1
            part = self.pending[key] = _Partial(count)
            while len(self.pending) > self.max_pending:
                del self.pending[next(iter(self.pending))]
                self.drops["train_incomplete"] += 1
        if part.chunks[index] is not None:
            self.drops["train_duplicate"] += 1
            return
        part.chunks[index] = bytes(datagram[HEADER_LEN:])
        part.have += 1
        if part.have == count:
            del self.pending[key]
            self.trains += 1
            out.append(b"".join(part.chunks))  # type: ignore[arg-type]
