"""shared/nats_protocol.py: the NATS client protocol without I/O (the server's bytes in
any pieces -> events; commands as bytes)."""
from __future__ import annotations

import json

import pytest

from shared import nats_protocol as proto

STREAM = (b'INFO {"server_id":"x","max_payload":1048576,"headers":true}\r\n'
          b"PING\r\n+OK\r\nPONG\r\n"
          b"MSG weave.a 3 5\r\nhello\r\n"
          b"MSG weave.b 4 _INBOX.x.1 0\r\n\r\n"
          b"HMSG weave.c 5 _INBOX.x.2 32 34\r\nNATS/1.0\r\ntraceparent: 00-ab\r\n\r\nhi\r\n"
          b"HMSG _INBOX.x.3 1 16 16\r\nNATS/1.0 503\r\n\r\n\r\n")


def _expected() -> list:
    return [proto.Info({"server_id": "x", "max_payload": 1048576, "headers": True}), proto.Ping(), proto.Pong(),
            proto.Msg("weave.a", 3, "", b"hello"),
            proto.Msg("weave.b", 4, "_INBOX.x.1", b""),
            proto.Msg("weave.c", 5, "_INBOX.x.2", b"hi", {"traceparent": "00-ab"}),
            proto.Msg("_INBOX.x.3", 1, "", b"", {}, "503")]


def test_a_stream_read_whole():
    assert proto.Parser().feed(STREAM) == _expected()


@pytest.mark.parametrize("size", [1, 2, 7, 64])
def test_a_stream_in_pieces_gives_the_same_events(size):
    parser = proto.Parser()
    events = []
    for i in range(0, len(STREAM), size):
        events += parser.feed(STREAM[i:i + size])
    assert events == _expected()


@pytest.mark.parametrize("line,fatal", [
    (b"-ERR 'Authorization Violation'\r\n", True),
    (b"-ERR 'Permissions Violation for Publish to foo'\r\n", False),
    (b"-ERR 'Invalid Subject'\r\n", False),
])
def test_server_errors(line, fatal):
    [event] = proto.Parser().feed(line)
    assert isinstance(event, proto.Error) and event.fatal is fatal and "'" not in event.text


@pytest.mark.parametrize("garbage", [
    b"HELLO there\r\n",                        # no such operation
    b"MSG weave.a x 5\r\nhello\r\n",          # a sid that is no number
    b"MSG weave.a 1 a b 5\r\nhello\r\n",      # two reply subjects
    b"HMSG weave.a 1 9 4\r\nNATS/1.0\r\n",     # headers longer than the whole
    b"MSG weave.a 1 %d\r\nx\r\n" % (proto.MAX_MESSAGE_BYTES + 1),  # a size no server sends
    b"INFO {not json\r\n",
    b"X" * (proto.MAX_CONTROL_LINE + 1),      # a control line that never ends
])
def test_what_cannot_be_read_is_one_fatal_error_and_the_rest_is_dropped(garbage):
    events = proto.Parser().feed(garbage + b"PING\r\n")
    assert len(events) == 1 and isinstance(events[0], proto.Error) and events[0].fatal


def test_a_payload_waits_for_all_its_bytes():
    parser = proto.Parser()
    assert parser.feed(b"MSG s 1 10\r\n01234") == []
    assert parser.feed(b"56789\r") == []
    assert parser.feed(b"\nPONG\r\n") == [proto.Msg("s", 1, "", b"0123456789"), proto.Pong()]


def test_commands():
    assert proto.pub("weave.a", b"hello") == b"PUB weave.a 5\r\nhello\r\n"
    assert proto.pub("weave.a", b"", reply="_INBOX.x.1") == b"PUB weave.a _INBOX.x.1 0\r\n\r\n"
    hpub = proto.pub("weave.a", b"hi", reply="r", headers={"traceparent": "00-ab"})
    head = b"NATS/1.0\r\ntraceparent: 00-ab\r\n\r\n"
    assert hpub == b"HPUB weave.a r %d %d\r\n" % (len(head), len(head) + 2) + head + b"hi\r\n"
    assert proto.sub("weave.>", 7) == b"SUB weave.> 7\r\n"
    assert proto.sub("weave.x", 8, "q") == b"SUB weave.x q 8\r\n"
    assert proto.unsub(8) == b"UNSUB 8\r\n"


def test_connect_asks_for_headers_and_no_responders_and_carries_the_token():
    line = proto.connect(name="weave-ipam", token="s3cret", version="v")
    assert line.startswith(b"CONNECT ") and line.endswith(b"\r\n")
    opts = json.loads(line[len(b"CONNECT "):])
    assert opts["headers"] is True and opts["no_responders"] is True and opts["protocol"] == 1
    assert opts["auth_token"] == "s3cret" and opts["name"] == "weave-ipam" and opts["verbose"] is False
    assert "auth_token" not in json.loads(proto.connect(name="n", token="", version="v")[8:])


@pytest.mark.parametrize("subject,ok", [("weave.ipam.status", True), ("weave.>", True), ("_INBOX.ab.*", True),
                                        ("", False), ("a..b", False), ("a b", False), (".a", False),
                                        ("a.\r\n", False)])
def test_valid_subject(subject, ok):
    assert proto.valid_subject(subject) is ok


def test_session_subscriptions_and_what_a_new_connection_is_told():
    s = proto.Session("_INBOX.ab.")
    sid1, line1 = s.subscribe("weave.a")
    sid2, line2 = s.subscribe("weave.b", "q")
    assert (line1, line2) == (b"SUB weave.a 1\r\n", b"SUB weave.b q 2\r\n")
    token, reply, inbox = s.request()
    assert (token, reply, inbox) == ("1", "_INBOX.ab.1", b"SUB _INBOX.ab.* 3\r\n")
    assert s.request()[2] == b""  # the inbox is subscribed once
    assert s.unsubscribe(sid1) == b"UNSUB 1\r\n" and s.unsubscribe(sid1) == b""
    lost, kept = object(), object()
    s.ping(lost), s.keepalive(), s.ping(kept)
    # a new connection: the subscriptions, the inbox, one PING per waiter still waiting
    hello = s.connected(lambda w: w is kept)
    assert hello == b"SUB weave.b q 2\r\nSUB _INBOX.ab.* 3\r\nPING\r\n"
    assert s.pong() is kept and s.pong() is None and s.waiters() == []


def test_session_pongs_answer_pings_in_order_and_keepalive_gives_up():
    s = proto.Session("_INBOX.ab.")
    first, second = object(), object()
    s.ping(first), s.keepalive(), s.ping(second)
    assert [s.pong(), s.pong(), s.pong()] == [first, None, second]
    assert s.keepalive() == b"PING\r\n" and s.keepalive() == b"PING\r\n"
    assert s.keepalive() is None  # two unanswered: the connection is dead
    s.pong()
    assert s.keepalive() == b"PING\r\n"  # any PONG shows it alive


def test_session_knows_its_replies():
    s = proto.Session("_INBOX.ab.")
    sid, _ = s.subscribe("weave.a")
    assert s.reply_token(proto.Msg("_INBOX.ab.1", 99, "", b"")) is None  # no inbox yet
    s.request()
    assert s.reply_token(proto.Msg("_INBOX.ab.7", s.inbox_sid, "", b"")) == "7"
    assert s.reply_token(proto.Msg("weave.a", sid, "", b"")) is None
