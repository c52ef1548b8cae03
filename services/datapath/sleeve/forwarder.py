"""One sleeve forwarder per remote peer (weave:router/sleeve.go `sleeveForwarder`), sans-I/O.

Everything happens in calls that take `now` (seconds, any monotonic clock) and return
actions; `next_deadline()` says when to call `tick(now)` next.

States: NEW (made with the mesh connection) -> CONFIRMED (mesh confirmed it: fast
heartbeats) -> ESTABLISHED (the peer acknowledged our heartbeats: slow heartbeats,
frag test, PMTU discovery) ; FAILED (no heartbeat for 60 s) and STOPPED are final.
CONFIRMED and ESTABLISHED are the "live" states. The table's times are production's
(`Heartbeats`, from DatapathSettings: fast 500 ms, slow 10 s, timeout 6 slow ones).

| state      | event                          | what happens                                   | next        |
|------------|--------------------------------|------------------------------------------------|-------------|
| NEW        | confirm                        | heartbeat now if the UDP address is known, then every 500 ms; heartbeat timeout in 60 s | CONFIRMED |
| live       | heartbeat frame, our connUID   | learn/refresh the peer's UDP address (if it was unknown: heartbeat now); first one ever: send control ConnectionEstablished; timeout re-armed to 60 s | same |
| CONFIRMED  | heartbeat frame, our connUID, resumed | as above, then as control ConnectionEstablished (the peer acked our previous datapath and will not again) | ESTABLISHED |
| live       | heartbeat frame, other connUID | ignored (a stale or duplicate connection)      | same        |
| CONFIRMED  | control ConnectionEstablished  | heartbeats every 10 s (re-armed from now); emit Established; frag test now and every 5 min; PMTU probe (60000-byte DF frame) | ESTABLISHED |
| ESTABLISHED| control ConnectionEstablished  | frag test + PMTU probe again (as weave)        | ESTABLISHED |
| live       | heartbeat due                  | send heartbeat, re-arm with current interval   | same        |
| live       | heartbeat timeout              | emit Failed                                    | FAILED      |
| live       | frag test due                  | stack_frag = False; send 60001 zero bytes non-DF; re-arm 5 min | same |
| live       | frag test frame (all zeros)    | send control FragmentationReceived             | same        |
| live       | control FragmentationReceived  | stack_frag = True (kernel may fragment non-DF) | same        |
| live       | msg too big (shell: EMSGSIZE, IP_MTU = pmtu) | candidate = pmtu - overhead; search [552, candidate] unless a search for a smaller candidate runs | same |
| live       | MTU test frame (n bytes)       | send control PMTUVerified(n - 14)              | same        |
| live       | control PMTUVerified(candidate)| highest good = candidate; next step of the binary search | same |
| live       | MTU test timeout               | resend (timeout 10 ms doubling, 8 tries), then lowest bad = candidate; next step | same |
| any        | stop                           | nothing more is sent                            | STOPPED     |
| live       | control OFFLOAD(flags)         | peer_offload = flags & TAKES, peer_trains = flags & TRAINS; unless REPLY: answer with ours; if RESUMED (the peer's datapath restarted under a live connection): forget our ack, so its next heartbeat is acknowledged again, and heartbeat now | same |

Offload (weave-py only, see offload.py): a forwarder made with `offload=True` sends
control OFFLOAD(TAKES) on confirm. Weave Net 2.8 ignores the unknown sub-tag (one log
line) and never answers, so `peer_offload` stays False and only plain frames are
sent to it. Compat (raw tag) connections are never offered it. A forwarder made with
`trains=True` also sets OFFLOAD_TRAINS (its socket reads segment trains, train.py);
once the peer has said the same and the path MTU is verified, its non-DF datagrams
carry `train` = the verified UDP payload limit, and the shell sends any larger one as
a train of datagrams of that size instead of letting the kernel fragment it.
Any other (state, event) pair is ignored: control messages before confirm, anything
after FAILED/STOPPED. When the search ends (highest good + 1 >= lowest bad) the MTU is
the highest good candidate: emit MTUVerified. Data frames need a known UDP address.

Outbound connections know the peer's UDP address from the start (= the TCP address);
inbound ones learn it from the first valid heartbeat, and later heartbeats from another
address move it (NAT rebinding).
"""
from __future__ import annotations

from enum import Enum
from typing import Any, Hashable, NamedTuple

from services.datapath.sleeve import frame as fr
from services.datapath.sleeve import train
from services.datapath.sleeve.crypto import NaClDecryptor, NaClPacker
from shared.config import DatapathSettings
from shared.weave.protocol_tags import ProtocolTag


class Heartbeats(NamedTuple):
    """A forwarder's heartbeat periods (DatapathSettings' fast_heartbeat_s and
    slow_heartbeat_s; the defaults are production's)."""

    fast: float = DatapathSettings().fast_heartbeat_s
    """Seconds between heartbeats until the peer acknowledges one (weave FastHeartbeat)."""
    slow: float = DatapathSettings().slow_heartbeat_s
    """Seconds between heartbeats once established (weave SlowHeartbeat)."""

    @property
    def timeout(self) -> float:
        """No valid heartbeat for this long fails the forwarder (6 missed slow heartbeats)."""
        return 6 * self.slow


FRAG_TEST_INTERVAL = 300.0
MTU_VERIFY_ATTEMPTS = 8
MTU_VERIFY_TIMEOUT = 0.010
"""First MTU test timeout; doubled with each attempt."""
MTU_SEARCH_FLOOR = 552
"""Lowest MTU the search assumes good (576-byte IPv4 minimum minus overhead headroom)."""

CONNECTION_ESTABLISHED = 1
FRAGMENTATION_RECEIVED = 2
PMTU_VERIFIED = 3
"""Control message tags, carried over the mesh TCP connection."""
OFFLOAD = 0x80
"""weave-py's own sub-tag: one flags byte, OFFLOAD_TAKES | OFFLOAD_REPLY."""
OFFLOAD_TAKES = 0x01
"""The sender injects marked (offloaded) frames."""
OFFLOAD_REPLY = 0x02
"""An answer: do not answer it."""
OFFLOAD_RESUMED = 0x04
"""The sender's forwarder is new on a connection that was established before (its
datapath restarted): it needs ConnectionEstablished again."""
OFFLOAD_TRAINS = 0x08
"""The sender reads segment trains (train.py) on its sleeve socket."""


class ForwarderState(Enum):
    NEW = "new"
    CONFIRMED = "confirmed"
    ESTABLISHED = "established"
    FAILED = "failed"
    STOPPED = "stopped"


class Event(Enum):
    CONFIRM = "confirm"
    HEARTBEAT = "heartbeat"
    FRAG_TEST = "frag test frame"
    MTU_TEST = "mtu test frame"
    CONNECTION_ESTABLISHED = "control ConnectionEstablished"
    FRAGMENTATION_RECEIVED = "control FragmentationReceived"
    PMTU_VERIFIED = "control PMTUVerified"
    HEARTBEAT_DUE = "heartbeat due"
    HEARTBEAT_TIMEOUT = "heartbeat timeout"
    FRAG_TEST_DUE = "frag test due"
    MTU_TEST_TIMEOUT = "mtu test timeout"
    MSG_TOO_BIG = "msg too big"
    OFFLOAD = "control Offload"
    STOP = "stop"


class SendPacket(NamedTuple):
    """Send `payload` as one UDP datagram to `addr`; `df` = via the DF raw socket
    (whose EMSGSIZE the shell reports with `msg_too_big`), else the normal socket.
    The payload is a fresh buffer owned by the receiver of this action."""

    payload: bytes | bytearray
    addr: Any
    df: bool
    train: int = 0
    """Non-zero: the peer reads segment trains (train.py) and this is the path's UDP
    payload limit, so a payload larger than it may go as a train of that segment size."""


class SendControl(NamedTuple):
    """Send overlay control message `tag` + `body` to `peer` over the mesh (TCP)."""

    peer: int
    tag: int
    body: bytes

    def mesh_message(self, overlay_index: int | None = 0) -> bytes:
        """The mesh message body that carries it: tag 7 + overlay index (into the
        common overlay list) + sub-tag + body; or, for a peer that did not send the
        `Overlays` feature ("compat" sleeve, index None), the raw tag 1-3 + body."""
        if overlay_index is None:
            return bytes([self.tag]) + self.body
        return bytes([ProtocolTag.OVERLAY_CONTROL, overlay_index, self.tag]) + self.body


class Established(NamedTuple):
    """The peer acknowledged our heartbeats: mark the mesh connection established."""

    peer: int


class Failed(NamedTuple):
    """The forwarder gave up; the connection drops unless another overlay works."""

    peer: int
    reason: str


class MTUVerified(NamedTuple):
    peer: int
    mtu: int


_LIVE = (ForwarderState.CONFIRMED, ForwarderState.ESTABLISHED)
_LIVE_HANDLERS = {
    Event.HEARTBEAT: "_on_heartbeat",
    Event.FRAG_TEST: "_on_frag_test",
    Event.MTU_TEST: "_on_mtu_test",
    Event.FRAGMENTATION_RECEIVED: "_on_frag_test_ack",
    Event.PMTU_VERIFIED: "_on_mtu_test_ack",
    Event.HEARTBEAT_DUE: "_on_heartbeat_due",
    Event.HEARTBEAT_TIMEOUT: "_on_heartbeat_timeout",
    Event.FRAG_TEST_DUE: "_on_frag_test_due",
    Event.MTU_TEST_TIMEOUT: "_on_mtu_test_timeout",
    Event.MSG_TOO_BIG: "_on_msg_too_big",
    Event.CONNECTION_ESTABLISHED: "_on_heartbeat_ack",
    Event.OFFLOAD: "_on_offload",
    Event.STOP: "_on_stop",
}
TABLE: dict[tuple[ForwarderState, Event], str] = {
    (ForwarderState.NEW, Event.CONFIRM): "_on_confirm",
    (ForwarderState.NEW, Event.STOP): "_on_stop",
    (ForwarderState.FAILED, Event.STOP): "_on_stop",
    **{(s, e): h for s in _LIVE for e, h in _LIVE_HANDLERS.items()},
}
"""(state, event) -> handler; pairs not listed are ignored."""

_CONTROL_EVENTS = {
    CONNECTION_ESTABLISHED: Event.CONNECTION_ESTABLISHED,
    FRAGMENTATION_RECEIVED: Event.FRAGMENTATION_RECEIVED,
    PMTU_VERIFIED: Event.PMTU_VERIFIED,
    OFFLOAD: Event.OFFLOAD,
}
_TIMERS = (
    ("heartbeat_timeout_at", Event.HEARTBEAT_TIMEOUT),
    ("heartbeat_at", Event.HEARTBEAT_DUE),
    ("frag_test_at", Event.FRAG_TEST_DUE),
    ("mtu_test_at", Event.MTU_TEST_TIMEOUT),
)


class Forwarder:
    """Sleeve state for one mesh connection to `remote`.

    `session_key` None means plaintext sleeve (password unset or trusted subnet).
    `remote_addr` is the peer's UDP address if known (outbound connections), else None.
    Addresses are opaque hashables compared with ==, e.g. ("192.168.77.2", 6783).
    """

    def __init__(
        self, local: int, remote: int, conn_uid: int, outbound: bool,
        remote_addr: Hashable | None = None, session_key: bytes | None = None, offload: bool = False,
        resumed: bool = False, first_seq: int = 0, trains: bool = False, heartbeats: Heartbeats = Heartbeats(),
    ) -> None:
        self.local, self.remote, self.conn_uid = local, remote, conn_uid
        self.heartbeats = heartbeats
        self.trains = trains and offload
        """We read segment trains (and so offer them with OFFLOAD)."""
        self.peer_trains = False
        """The peer said it reads segment trains."""
        self.mtu_verified = False
        """The path MTU search finished (max_payload is the verified UDP payload limit)."""
        self._first_seq = first_seq
        """Encrypted sequence numbers start here (see crypto.NaClPacker)."""
        self.offload = offload
        """We take marked frames (and so offer it to the peer)."""
        self.resumed = resumed
        """Made for a connection that existed before this datapath started."""
        self.peer_offload = False
        """The peer said it takes marked frames."""
        self.encrypted = session_key is not None
        self.remote_addr = remote_addr
        self.state = ForwarderState.NEW
        self.mtu = fr.DEFAULT_MTU
        """Overlay MTU: IP packets up to this size pass on the DF channel."""
        self.stack_frag = False
        """The peer received our fragmented frag test: the kernel may fragment non-DF."""
        self._make_packers(session_key, outbound)
        self.overhead_df = (
            fr.UDP_OVERHEAD + self._enc_df.packet_overhead + fr.FRAME_OVERHEAD + fr.ETHERNET_OVERHEAD
        )
        self.max_payload = fr.DEFAULT_MTU - fr.UDP_OVERHEAD
        self.heartbeat_interval = 0.0
        self.acked_heartbeat = False
        self.heartbeat_at: float | None = None
        self.heartbeat_timeout_at: float | None = None
        self.frag_test_at: float | None = None
        self.mtu_test_at: float | None = None
        self.mtu_tests_sent = 0
        self.mtu_highest_good = 0
        self.mtu_lowest_bad = 0
        self.mtu_candidate = 0
        self.oversized = 0
        """Frames dropped by `forward` for not fitting even an empty packet."""

    def _make_packers(self, session_key: bytes | None, outbound: bool) -> None:
        if session_key is None:
            self._enc: fr.Packer = fr.PlainPacker(self.local)
            self._enc_df: fr.Packer = fr.PlainPacker(self.local)
            self._decryptor: NaClDecryptor | None = None
        else:
            self._enc = NaClPacker(self.local, session_key, outbound, df=False, first_seq=self._first_seq)
            self._enc_df = NaClPacker(self.local, session_key, outbound, df=True, first_seq=self._first_seq)
            self._decryptor = NaClDecryptor(session_key, outbound)

    # ---- events in ---------------------------------------------------------------

    def handle(self, event: Event, now: float, *args: Any) -> list:
        """Run the table entry for (state, event); [] if there is none."""
        name = TABLE.get((self.state, event))
        if name is None:
            return []
        out: list = []
        getattr(self, name)(now, out, *args)
        return out

    def confirm(self, now: float) -> list:
        return self.handle(Event.CONFIRM, now)

    def stop(self) -> list:
        return self.handle(Event.STOP, 0.0)

    def msg_too_big(self, pmtu: int, now: float) -> list:
        """The kernel refused a DF datagram with EMSGSIZE; `pmtu` = IP_MTU of the path."""
        return self.handle(Event.MSG_TOO_BIG, now, pmtu)

    def control_message(self, tag: int, body: bytes, now: float) -> list:
        """A control message from the peer; unknown tags are ignored (as weave)."""
        event = _CONTROL_EVENTS.get(tag)
        return [] if event is None else self.handle(event, now, bytes(body))

    def special_frame(self, frame: bytes | memoryview, sender: Hashable, now: float) -> list:
        """A special frame the peer addressed to us, arrived from UDP address `sender`."""
        if len(frame) == fr.HEARTBEAT_SIZE:
            return self.handle(Event.HEARTBEAT, now, fr.heartbeat_uid(frame), sender)
        if len(frame) == fr.FRAG_TEST_SIZE:
            return self.handle(Event.FRAG_TEST, now, frame)
        return self.handle(Event.MTU_TEST, now, len(frame))

    def next_deadline(self) -> float | None:
        times = [t for t in (getattr(self, attr) for attr, _ in _TIMERS) if t is not None]
        return min(times) if times else None

    def tick(self, now: float, early: float = 0.0) -> list:
        """Fire every timer due at `now`, earliest first. A heartbeat due within `early`
        (at most half its interval) goes now too: the host's heartbeats fall onto
        wake-ups it has anyway, and the peer, whose timeout counts from the last one it
        heard, only hears from us a little sooner."""
        out: list = []
        while (due := self._earliest_due(now, early)) is not None:
            attr, event = due
            setattr(self, attr, None)
            out += self.handle(event, now)
        return out

    def _earliest_due(self, now: float, early: float = 0.0) -> tuple[str, Event] | None:
        best = None
        for attr, event in _TIMERS:
            t = getattr(self, attr)
            limit = now + min(early, self.heartbeat_interval / 2) if event is Event.HEARTBEAT_DUE else now
            if t is not None and t <= limit and (best is None or t < best[0]):
                best = (t, attr, event)
        return None if best is None else best[1:]

    # ---- data frames -------------------------------------------------------------

    def open(self, body: memoryview) -> list[tuple[int, int, memoryview]] | None:
        """Frames of a packet body from this peer; None if it was a replay.
        Raises FrameDecodingError / DecryptionError (both RemoteProtocolError)."""
        if self._decryptor is None:
            return fr.iterate_frames(body)
        plain = self._decryptor.open(body)
        return None if plain is None else fr.iterate_frames(plain)

    def forward(self, src: int, dst: int, frame: bytes | memoryview, df: bool) -> SendPacket | None:
        """Batch a frame on the DF or non-DF channel (weave aggregateAndSend).

        Returns the previous batch if this frame does not join it (100 frames, or it
        would exceed the path payload), else None. A frame that does not fit even an
        empty packet (non-DF: 65507 bytes, DF: the path payload) is dropped and counted
        in `self.oversized`. The caller checked `remote_addr` is known.
        """
        enc = self._enc_df if df else self._enc
        n = len(frame) + fr.FRAME_OVERHEAD
        done = None
        if enc.count:
            if enc.count < fr.MAX_FRAMES_PER_PACKET and enc.total_len() + n <= self.max_payload:
                enc.append_frame(src, dst, frame)
                return None
            done = SendPacket(enc.flush(), self.remote_addr, df, 0 if df else self.train_seg)
        limit = self.max_payload if df else self.nondf_limit
        if enc.total_len() + n > limit:
            self.oversized += 1
            return done
        enc.append_frame(src, dst, frame)
        return done

    def flush(self) -> list[SendPacket]:
        """Datagrams for every frame batched so far (non-DF first)."""
        out = []
        if self._enc.count:
            out.append(SendPacket(self._enc.flush(), self.remote_addr, False, self.train_seg))
        if self._enc_df.count:
            out.append(SendPacket(self._enc_df.flush(), self.remote_addr, True))
        return out

    def _send_special(self, out: list, frame: bytes, df: bool) -> None:
        """Send a router-made frame alone in its own datagram, after any batch."""
        if self.remote_addr is None:
            return
        enc = self._enc_df if df else self._enc
        if enc.count:
            out.append(SendPacket(enc.flush(), self.remote_addr, df))
        enc.append_frame(self.local, self.remote, frame)
        out.append(SendPacket(enc.flush(), self.remote_addr, df))

    # ---- handlers (see the table) -------------------------------------------------

    def _on_confirm(self, now: float, out: list) -> None:
        self.state = ForwarderState.CONFIRMED
        self.heartbeat_interval = self.heartbeats.fast
        if self.offload:
            flags = self._offload_flags() | (OFFLOAD_RESUMED if self.resumed else 0)
            out.append(SendControl(self.remote, OFFLOAD, bytes([flags])))
        if self.remote_addr is not None:
            self._send_heartbeat(now, out)
        self.heartbeat_timeout_at = now + self.heartbeats.timeout

    @property
    def nondf_limit(self) -> int:
        """Largest non-DF datagram payload: one (fragmented) UDP datagram, or a train."""
        seg = self.train_seg
        return fr.MAX_UDP_PAYLOAD if not seg else max(fr.MAX_UDP_PAYLOAD, train.MAX_SEGMENTS * (seg - train.HEADER_LEN))

    def fits_nondf(self, frame_len: int) -> bool:
        """A frame of this size can go alone in one non-DF datagram (or train)."""
        return frame_len + fr.FRAME_OVERHEAD + self._enc.packet_overhead <= self.nondf_limit

    @property
    def train_seg(self) -> int:
        """Segment size for trains to this peer (its verified UDP payload limit), or 0."""
        return self.max_payload if self.peer_trains and self.mtu_verified else 0

    def takes_offload(self, dst_peer: int) -> bool:
        """Whether a marked frame for `dst_peer` may go through this forwarder: the
        peer takes them, it is the destination (no relay), and it receives our kernel's
        fragments (the marked frame rides the non-DF channel)."""
        return self.peer_offload and self.stack_frag and dst_peer == self.remote

    def _on_offload(self, now: float, out: list, body: bytes) -> None:
        flags = body[0] if body else 0
        self.peer_offload = bool(flags & OFFLOAD_TAKES)
        self.peer_trains = self.peer_offload and bool(flags & OFFLOAD_TRAINS)
        if flags & OFFLOAD_REPLY or not self.offload:
            return
        out.append(SendControl(self.remote, OFFLOAD, bytes([self._offload_flags() | OFFLOAD_REPLY])))
        if flags & OFFLOAD_RESUMED:
            self.acked_heartbeat = False
            if self.remote_addr is not None:
                self._send_heartbeat(now, out)

    def _offload_flags(self) -> int:
        return OFFLOAD_TAKES | (OFFLOAD_TRAINS if self.trains else 0)

    def _send_heartbeat(self, now: float, out: list) -> None:
        self.heartbeat_at = now + self.heartbeat_interval
        self._send_special(out, fr.heartbeat_frame(self.conn_uid), df=True)

    def _on_heartbeat_due(self, now: float, out: list) -> None:
        self._send_heartbeat(now, out)

    def _on_heartbeat(self, now: float, out: list, uid: int, sender: Hashable) -> None:
        if uid != self.conn_uid:
            return
        if self.remote_addr is None:
            self.remote_addr = sender
            self._send_heartbeat(now, out)
        elif self.remote_addr != sender:
            self.remote_addr = sender
        if not self.acked_heartbeat:
            self.acked_heartbeat = True
            out.append(SendControl(self.remote, CONNECTION_ESTABLISHED, b""))
        self.heartbeat_timeout_at = now + self.heartbeats.timeout
        if self.resumed and self.state is ForwarderState.CONFIRMED:
            # The peer acknowledged this connection's heartbeats to our previous
            # datapath and will not again (Weave Net sends ConnectionEstablished once):
            # its heartbeat reaching us is the acknowledgement we get.
            self._on_heartbeat_ack(now, out, b"")

    def _on_heartbeat_ack(self, now: float, out: list, _body: bytes) -> None:
        if self.state is ForwarderState.CONFIRMED:
            self.state = ForwarderState.ESTABLISHED
            self.heartbeat_interval = self.heartbeats.slow
            if self.heartbeat_at is not None:
                self.heartbeat_at = now + self.heartbeats.slow
            out.append(Established(self.remote))
        self._on_frag_test_due(now, out)
        self._send_special(out, fr.pmtu_discovery_frame(), df=True)

    def _on_heartbeat_timeout(self, now: float, out: list) -> None:
        self._on_stop(now, out)
        self.state = ForwarderState.FAILED
        out.append(Failed(self.remote, "timed out waiting for UDP heartbeat"))

    def _on_stop(self, now: float, out: list) -> None:
        self.state = ForwarderState.STOPPED
        for attr, _ in _TIMERS:
            setattr(self, attr, None)

    def _on_frag_test_due(self, now: float, out: list) -> None:
        self.frag_test_at = now + FRAG_TEST_INTERVAL
        self.stack_frag = False
        self._send_special(out, fr.frag_test_frame(), df=False)

    def _on_frag_test(self, now: float, out: list, frame: bytes | memoryview) -> None:
        if fr.all_zeros(frame):
            out.append(SendControl(self.remote, FRAGMENTATION_RECEIVED, b""))

    def _on_frag_test_ack(self, now: float, out: list, _body: bytes) -> None:
        self.stack_frag = True

    def _on_mtu_test(self, now: float, out: list, length: int) -> None:
        size = (length - fr.ETHERNET_OVERHEAD) & 0xFFFF
        out.append(SendControl(self.remote, PMTU_VERIFIED, size.to_bytes(2, "big")))

    def _on_msg_too_big(self, now: float, out: list, pmtu: int) -> None:
        mtu = pmtu - self.overhead_df
        if self.mtu_candidate != 0 and mtu >= self.mtu_candidate:
            return
        self.mtu_highest_good = MTU_SEARCH_FLOOR
        self.mtu_lowest_bad = mtu + 1
        self.mtu_candidate = mtu
        self.mtu_tests_sent = 0
        self.max_payload = pmtu - fr.UDP_OVERHEAD
        self.mtu = mtu
        self.mtu_verified = False
        self._send_mtu_test(now, out)

    def _send_mtu_test(self, now: float, out: list) -> None:
        self._send_special(out, fr.mtu_test_frame(self.mtu_candidate), df=True)
        self.mtu_test_at = now + (MTU_VERIFY_TIMEOUT * (1 << self.mtu_tests_sent))
        self.mtu_tests_sent += 1

    def _on_mtu_test_ack(self, now: float, out: list, body: bytes) -> None:
        if len(body) < 2:
            return
        mtu = int.from_bytes(body[:2], "big")
        if mtu != self.mtu_candidate:
            return
        self.mtu_highest_good = mtu
        self._search_mtu(now, out)

    def _on_mtu_test_timeout(self, now: float, out: list) -> None:
        if self.mtu_tests_sent < MTU_VERIFY_ATTEMPTS:
            self._send_mtu_test(now, out)
            return
        self.mtu_lowest_bad = self.mtu_candidate
        self._search_mtu(now, out)

    def _search_mtu(self, now: float, out: list) -> None:
        if self.mtu_highest_good + 1 >= self.mtu_lowest_bad:
            mtu = self.mtu_highest_good
            self.mtu_test_at = None
            self.mtu_candidate = 0
            self.max_payload = mtu + self.overhead_df - fr.UDP_OVERHEAD
            self.mtu = mtu
            self.mtu_verified = True
            out.append(MTUVerified(self.remote, mtu))
            return
        self.mtu_candidate = (self.mtu_highest_good + self.mtu_lowest_bad) // 2
        self.mtu_tests_sent = 0
        self._send_mtu_test(now, out)

