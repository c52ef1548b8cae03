"""The NATS client protocol, sans-I/O: bytes in, events out; commands as bytes.

What a bus client of one host's nats-server needs (https://docs.nats.io/reference/
reference-protocols/nats-protocol): INFO, MSG and HMSG (with headers and their status
line), PING/PONG, +OK and -ERR from the server; CONNECT, PUB/HPUB, SUB, UNSUB, PING and
PONG from the client. No TLS, no JetStream. `Parser.feed` never raises on the server's
bytes: what it cannot read ends in an `Error` event and the shell drops the connection.
`Session` is what a client keeps across connections (subscriptions, the request inbox,
which PING a PONG answers); shared/nats_client.py is the asyncio shell around both.
"""
from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

CRLF = b"\r\n"
MAX_CONTROL_LINE = 4096
MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # nats-server's ceiling for max_payload: a claim past it is garbage
HEADER_LINE = b"NATS/1.0"
STATUS_NO_RESPONDERS = "503"


@dataclass(frozen=True)
class Info:
    """The server's INFO (on connect, and again when the cluster changes)."""

    fields: dict


@dataclass(frozen=True)
class Msg:
    """A message for one of our subscriptions (MSG or HMSG)."""

    subject: str
    sid: int
    reply: str
    data: bytes
    headers: dict[str, str] = field(default_factory=dict)
    status: str = ""
    """The header block's status code ('503': no responders), '' for none."""


@dataclass(frozen=True)
class Ping:
    pass


@dataclass(frozen=True)
class Pong:
    pass


@dataclass(frozen=True)
class Error:
    """-ERR from the server, or bytes this parser cannot read (`fatal`: drop the link)."""

    text: str
    fatal: bool = True


Event = Info | Msg | Ping | Pong | Error


class Parser:
    """Splits the server's byte stream into events. Bytes may arrive in any pieces."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._need: tuple[str, int, str, int, int] | None = None  # a (H)MSG awaiting its payload

    def feed(self, data: bytes) -> list[Event]:
        self._buf += data
        events: list[Event] = []
        while True:
            event = self._next()
            if event is None:
                return events
            events.append(event)
            if isinstance(event, Error) and event.fatal:
                self._buf.clear()
                return events

    def _next(self) -> Event | None:
        if self._need is not None:
            return self._payload()
        end = self._buf.find(CRLF)
        if end < 0:
            return Error("control line too long") if len(self._buf) > MAX_CONTROL_LINE else None
        line = bytes(self._buf[:end])
        del self._buf[:end + 2]
        return self._control(line)

    def _control(self, line: bytes) -> Event | None:
        op, _, rest = line.partition(b" ")
        op = op.upper()
        if op in (b"MSG", b"HMSG"):
            return self._msg_line(op, rest.split())
        if op == b"PING":
            return Ping()
        if op == b"PONG":
            return Pong()
        if op == b"+OK":
            return self._next()
        if op == b"-ERR":
            text = rest.decode(errors="replace").strip().strip("'")
            return Error(text, fatal=not text.lower().startswith(("permissions violation", "invalid subject")))
        if op == b"INFO":
            try:
                return Info(json.loads(rest))
            except ValueError:
                return Error("unreadable INFO")
        return Error(f"unknown operation {op[:16]!r}")

    def _msg_line(self, op: bytes, args: list[bytes]) -> Event | None:
        headed = op == b"HMSG"
        try:
            if headed:
                subject, sid, *reply, hlen, total = args
            else:
                subject, sid, *reply, total = args
                hlen = b"0"
            if len(reply) > 1:
                raise ValueError
            need = (subject.decode(), int(sid), reply[0].decode() if reply else "", int(hlen), int(total))
        except (ValueError, UnicodeDecodeError):
            return Error(f"unreadable {op.decode()} line")
        if not 0 <= need[3] <= need[4] <= MAX_MESSAGE_BYTES:
            return Error(f"unreadable {op.decode()} sizes")  # (never buffered up to a claimed size)
        self._need = need
        return self._payload()

    def _payload(self) -> Event | None:
        subject, sid, reply, hlen, total = self._need
        if len(self._buf) < total + 2:
            return None
        block = bytes(self._buf[:total])
        del self._buf[:total + 2]
        self._need = None
        headers, status = _parse_headers(block[:hlen]) if hlen else ({}, "")
        return Msg(subject, sid, reply, block[hlen:], headers, status)


def _parse_headers(block: bytes) -> tuple[dict[str, str], str]:
    """The header block: 'NATS/1.0[ status[ description]]' then 'Key: Value' lines."""
    lines = block.decode(errors="replace").split("\r\n")
    first = lines[0]
    status = first[len("NATS/1.0"):].strip().split(" ", 1)[0] if first.startswith("NATS/1.0") else ""
    headers: dict[str, str] = {}
    for line in lines[1:]:
        key, sep, value = line.partition(":")
        if sep and key:
            headers[key.strip()] = value.strip()
    return headers, status


# -- commands -------------------------------------------------------------------------
def connect(*, name: str, token: str, version: str) -> bytes:
    opts = {"verbose": False, "pedantic": False, "tls_required": False, "name": name, "lang": "python3",
            "version": version, "protocol": 1, "headers": True, "no_responders": True}
    if token:
        opts["auth_token"] = token
    return b"CONNECT " + json.dumps(opts, separators=(",", ":")).encode() + CRLF


def pub(subject: str, data: bytes, *, reply: str = "", headers: dict[str, str] | None = None) -> bytes:
    """PUB, or HPUB when there are headers."""
    target = f"{subject} {reply} " if reply else f"{subject} "
    if not headers:
        return b"".join((b"PUB ", target.encode(), str(len(data)).encode(), CRLF, data, CRLF))
    head = "NATS/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    hbytes = head.encode()
    return b"".join((b"HPUB ", target.encode(), str(len(hbytes)).encode(), b" ",
                     str(len(hbytes) + len(data)).encode(), CRLF, hbytes, data, CRLF))


def sub(subject: str, sid: int, queue: str = "") -> bytes:
    return (f"SUB {subject} {queue} {sid}" if queue else f"SUB {subject} {sid}").encode() + CRLF


def unsub(sid: int) -> bytes:
    return f"UNSUB {sid}".encode() + CRLF


PING = b"PING" + CRLF
PONG = b"PONG" + CRLF


def valid_subject(subject: str) -> bool:
    """A subject the protocol can carry: dot-separated non-empty tokens, no whitespace."""
    return bool(subject) and not any(c in subject for c in " \t\r\n") and "" not in subject.split(".")


MAX_PINGS_OUT = 2
"""Keep-alive PINGs left unanswered before the connection counts as dead (nats-py's)."""


class Session:
    """What a client remembers across its connections, sans-I/O: its subscriptions (sent
    again to every new connection), the request inbox and its reply tokens, and which
    PING each PONG answers (a caller's flush, or a keep-alive ping: `None`). Methods
    return the bytes to send; `waiter`s are the caller's (futures, in the shell)."""

    def __init__(self, inbox: str) -> None:
        self.inbox = inbox
        """The prefix of our reply subjects, `_INBOX.<random>.`; subscribed on first use."""
        self.subs: dict[int, tuple[str, str]] = {}
        self.inbox_sid = 0
        self.pings_out = 0
        self._sid = self._token = 0
        self._pongs: deque = deque()

    def subscribe(self, subject: str, queue: str = "") -> tuple[int, bytes]:
        self._sid += 1
        self.subs[self._sid] = (subject, queue)
        return self._sid, sub(subject, self._sid, queue)

    def unsubscribe(self, sid: int) -> bytes:
        """UNSUB, or b"" for a subscription already gone."""
        return unsub(sid) if self.subs.pop(sid, None) is not None else b""

    def request(self) -> tuple[str, str, bytes]:
        """A new request's token and reply subject, and the inbox's SUB on first use."""
        first = b""
        if not self.inbox_sid:
            self._sid += 1
            self.inbox_sid = self._sid
            first = sub(self.inbox + "*", self.inbox_sid)
        self._token += 1
        return str(self._token), f"{self.inbox}{self._token}", first

    def reply_token(self, msg: Msg) -> str | None:
        """The token of the request `msg` answers; None if it is no reply of ours."""
        return msg.subject[len(self.inbox):] if self.inbox_sid and msg.sid == self.inbox_sid else None

    def ping(self, waiter: object | None) -> bytes:
        """A PING whose PONG answers `waiter` (None: a keep-alive)."""
        self._pongs.append(waiter)
        return PING

    def keepalive(self) -> bytes | None:
        """The keep-alive PING; None when too many went unanswered (drop the connection)."""
        if self.pings_out >= MAX_PINGS_OUT:
            return None
        self.pings_out += 1
        return self.ping(None)

    def pong(self) -> object | None:
        """The waiter this PONG answers (None for a keep-alive, or none waiting)."""
        self.pings_out = 0
        return self._pongs.popleft() if self._pongs else None

    def waiters(self) -> list:
        """The waiters of PINGs not answered yet (to fail them when the client closes)."""
        return [w for w in self._pongs if w is not None]

    def connected(self, waiting: Callable[[object], bool]) -> bytes:
        """What a new connection must be told first: every subscription, the inbox, and
        a PING for each waiter still `waiting` (their PONGs were lost with the old one)."""
        self.pings_out = 0
        self._pongs = deque(w for w in self._pongs if w is not None and waiting(w))
        out = [sub(subject, sid, queue) for sid, (subject, queue) in self.subs.items()]
        if self.inbox_sid:
            out.append(sub(self.inbox + "*", self.inbox_sid))
        out += [PING] * len(self._pongs)
        return b"".join(out)
