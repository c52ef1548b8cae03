"""shared/rtnl.py and shared/netlink_wire.py: rtnetlink requests as bytes, replies decoded,
malformed input refused (the kernel's side is tests/e2e/test_netlink.py)."""
from __future__ import annotations

import socket
import struct

import pytest

from shared import rtnl
from shared.netlink_wire import (NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE,
                                 NLM_F_REQUEST, MalformedNetlink, attr, attrs, error_code, message, messages, nested)


def test_attributes_are_padded_and_walked_back():
    raw = attr(3, b"weave\0") + attr(4, struct.pack("=I", 1376)) + nested(18, attr(1, b"bridge\0"))
    assert len(attr(3, b"weave\0")) == 12  # 4 + 6, padded to 12
    got = [(t, bytes(v)) for t, v in attrs(raw)]
    assert got[0] == (3, b"weave\0") and got[1] == (4, struct.pack("=I", 1376))
    assert got[2][0] == 18 and [(t, bytes(v)) for t, v in attrs(got[2][1])] == [(1, b"bridge\0")]  # flag bit masked


def test_a_length_past_the_buffer_is_refused_not_read():
    with pytest.raises(MalformedNetlink):
        list(attrs(struct.pack("=HH", 40, 3) + b"abcd"))
    with pytest.raises(MalformedNetlink):
        list(attrs(struct.pack("=HH", 2, 3) + b"abcd"))  # shorter than its own header
    with pytest.raises(MalformedNetlink):
        list(messages(message(16, 0, 1, b"x" * 8)[:-4]))
    with pytest.raises(MalformedNetlink):
        error_code(memoryview(b"\0\0"))


def test_messages_and_errors_are_framed_as_the_kernel_does():
    ack = message(2, 0, 7, struct.pack("=i", 0) + b"\0" * 16)
    refused = message(2, 0, 8, struct.pack("=i", -17) + b"\0" * 16)
    got = list(messages(ack + refused))
    assert [(k, s) for k, _, s, _ in got] == [(2, 7), (2, 8)]
    assert error_code(got[0][3]) == 0 and error_code(got[1][3]) == 17  # EEXIST


def test_link_requests():
    kind, flags, body = rtnl.link("add", ifname="weave", kind="bridge", address="aa:00:00:00:00:01")
    assert kind == rtnl.RTM_NEWLINK and flags == NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
    assert rtnl.IFINFO.unpack_from(body) == (socket.AF_UNSPEC, 0, 0, 0, 0)
    found = {t: v for t, v in attrs(body, rtnl.IFINFO.size)}
    assert bytes(found[3]) == b"weave\0" and bytes(found[1]) == bytes.fromhex("aa0000000001")
    assert [(t, bytes(v)) for t, v in attrs(found[18])] == [(1, b"bridge\0")]

    kind, flags, body = rtnl.link("set", index=5, mtu=1376, master=2, state="up")
    assert (kind, flags) == (rtnl.RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK)
    assert rtnl.IFINFO.unpack_from(body) == (0, 0, 5, rtnl.IFF_UP, rtnl.IFF_UP)
    found = {t: struct.unpack("=I", v)[0] for t, v in attrs(body, rtnl.IFINFO.size)}
    assert found == {4: 1376, 10: 2}
    assert rtnl.IFINFO.unpack_from(rtnl.link("set", index=5, state="down")[2]) == (0, 0, 5, 0, rtnl.IFF_UP)
    assert rtnl.link("del", index=5)[0] == rtnl.RTM_DELLINK


def test_a_veth_peer_and_a_vxlan_carry_their_own_attributes():
    _, _, body = rtnl.link("add", ifname="vethwe", kind="veth", mtu=1376,
                           peer={"ifname": "ethwe", "mtu": 1376, "net_ns_fd": 9, "address": "aa:00:00:00:00:02"})
    info = {t: v for t, v in attrs(dict(attrs(body, rtnl.IFINFO.size))[18])}
    peer = dict(attrs(info[2]))[1]  # IFLA_INFO_DATA / VETH_INFO_PEER: an ifinfomsg, then its attributes
    peer_attrs = {t: bytes(v) for t, v in attrs(peer, rtnl.IFINFO.size)}
    assert peer_attrs[3] == b"ethwe\0" and peer_attrs[28] == struct.pack("=I", 9)
    assert peer_attrs[1] == bytes.fromhex("aa0000000002")

    _, _, body = rtnl.link("add", ifname="vxlan-6784", kind="vxlan", vxlan_id=0xFFFFFF, vxlan_local="10.2.0.1",
                           vxlan_port=6784, vxlan_learning=1)
    info = {t: v for t, v in attrs(dict(attrs(body, rtnl.IFINFO.size))[18])}
    data = {t: bytes(v) for t, v in attrs(info[2])}
    assert data == {1: struct.pack("=I", 0xFFFFFF), 4: bytes([10, 2, 0, 1]), 7: b"\1", 15: struct.pack("!H", 6784)}


def test_unknown_arguments_and_commands_are_refused_by_name():
    with pytest.raises(TypeError, match="txqlen"):
        rtnl.link("set", index=1, txqlen=5)
    with pytest.raises(TypeError, match="vxlan_id"):
        rtnl.link("add", ifname="x", kind="bridge", vxlan_id=1)
    with pytest.raises(ValueError, match="state"):
        rtnl.link("set", index=1, state="UP!")
    with pytest.raises(ValueError, match="unknown command"):
        rtnl.route("del", dst="10.0.0.0/8")
    with pytest.raises(ValueError, match="MAC"):
        rtnl.link("set", index=1, address="aa:bb")


def test_address_route_fdb_hairpin_and_nsid_requests():
    kind, flags, body = rtnl.addr("add", index=3, address="10.32.0.1", prefixlen=12)
    assert kind == rtnl.RTM_NEWADDR and rtnl.IFADDR.unpack_from(body) == (socket.AF_INET, 12, 0, 0, 3)
    assert {t: bytes(v) for t, v in attrs(body, rtnl.IFADDR.size)} == {1: bytes([10, 32, 0, 1]), 2: bytes([10, 32, 0, 1])}

    kind, flags, body = rtnl.route("replace", dst="10.9.0.0/16", gateway="10.32.0.254", oif=3)
    assert flags == NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
    assert rtnl.RTMSG.unpack_from(body) == (socket.AF_INET, 16, 0, 0, 254, rtnl.RTPROT_STATIC, 0, rtnl.RTN_UNICAST, 0)
    assert {t: bytes(v) for t, v in attrs(body, rtnl.RTMSG.size)} == {
        1: bytes([10, 9, 0, 0]), 5: bytes([10, 32, 0, 254]), 4: struct.pack("=I", 3)}
    _, _, body = rtnl.route("add", dst="default", gateway="10.32.0.254")
    assert rtnl.RTMSG.unpack_from(body)[1] == 0 and 1 not in dict(attrs(body, rtnl.RTMSG.size))  # no RTA_DST

    kind, flags, body = rtnl.fdb("append", ifindex=4, lladdr="00:00:00:00:00:00", dst="10.2.0.7")
    assert flags == NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND
    assert rtnl.NDMSG.unpack_from(body) == (rtnl.AF_BRIDGE, 4, rtnl.NUD_PERMANENT, rtnl.NTF_SELF, 0)
    assert rtnl.dump_fdb()[1] == NLM_F_REQUEST | NLM_F_DUMP

    kind, _, body = rtnl.brport_hairpin(6, True)
    assert kind == rtnl.RTM_SETLINK and rtnl.IFINFO.unpack_from(body)[:3] == (rtnl.AF_BRIDGE, 0, 6)
    protinfo = dict(attrs(body, rtnl.IFINFO.size))[12]
    assert {t: bytes(v) for t, v in attrs(protinfo)} == {4: b"\1"}  # IFLA_BRPORT_MODE

    kind, _, body = rtnl.get_nsid(11)
    assert kind == rtnl.RTM_GETNSID and dict((t, bytes(v)) for t, v in attrs(body, rtnl.RTGEN.size)) == {
        3: struct.pack("=I", 11)}


def test_replies_decode_to_fields_and_attributes_by_long_or_short_name():
    vxlan = nested(2, attr(1, struct.pack("=I", 42)), attr(15, struct.pack("!H", 6784)))
    body = (rtnl.IFINFO.pack(0, 1, 4, 0x1043, 0) + attr(3, b"vx\0") + attr(4, struct.pack("=I", 1376))
            + attr(1, bytes.fromhex("0242ac110002")) + attr(10, struct.pack("=I", 2))
            + attr(37, struct.pack("=i", 0)) + attr(7, b"\0" * 200)  # IFLA_STATS: not decoded
            + nested(18, attr(1, b"vxlan\0"), vxlan))
    link = rtnl.decode(rtnl.RTM_NEWLINK, memoryview(body))
    assert link["index"] == 4 and link["flags"] == 0x1043
    assert link.get("ifname") == "vx" == link.get("IFLA_IFNAME") and link.get_attr("IFLA_MTU") == 1376
    assert link.get("address") == "02:42:ac:11:00:02" and link.get("master") == 2
    assert link.get("IFLA_LINK_NETNSID") == 0 and link.get("IFLA_LINK") is None and link.get("IFLA_STATS") is None
    info = link.get_attr("IFLA_LINKINFO")
    assert info.get_attr("IFLA_INFO_KIND") == "vxlan"
    data = info.get_attr("IFLA_INFO_DATA")
    assert data.get_attr("IFLA_VXLAN_ID") == 42 and data.get_attr("IFLA_VXLAN_PORT") == 6784

    body = rtnl.NDMSG.pack(rtnl.AF_BRIDGE, 4, 0x80, 2, 0) + attr(2, b"\0" * 6) + attr(1, bytes([10, 2, 0, 7]))
    neigh = rtnl.decode(rtnl.RTM_NEWNEIGH, memoryview(body))
    assert (neigh["ifindex"], neigh["state"]) == (4, 0x80)
    assert neigh.get_attr("NDA_LLADDR") == "00:00:00:00:00:00" and neigh.get_attr("NDA_DST") == "10.2.0.7"

    body = rtnl.IFADDR.pack(2, 12, 0, 0, 3) + attr(1, bytes([10, 32, 0, 1])) + attr(2, bytes([10, 32, 0, 1]))
    a = rtnl.decode(rtnl.RTM_NEWADDR, memoryview(body))
    assert (a["index"], a["prefixlen"], a.get_attr("IFA_ADDRESS"), a.get("IFA_LOCAL")) == (3, 12, "10.32.0.1", "10.32.0.1")
    assert rtnl.decode(rtnl.RTM_NEWNSID, memoryview(rtnl.RTGEN.pack(0) + attr(1, struct.pack("=i", -1)))).get(
        "NETNSA_NSID") == -1
    assert rtnl.decode(99, memoryview(b"")) is None and rtnl.decode(rtnl.RTM_NEWLINK, memoryview(b"\0" * 4)) is None


def test_an_answer_ends_where_the_kernel_says_and_skips_other_requests():
    from shared.netlink_wire import NLM_F_MULTI, NLMSG_DONE, NLMSG_NOOP, Answer

    link = rtnl.IFINFO.pack(0, 1, 4, 0, 0)
    dump = Answer(7, dump=True)
    assert not dump.feed(message(rtnl.RTM_NEWLINK, NLM_F_MULTI, 6, link)  # an earlier request's: skipped
                         + message(rtnl.RTM_NEWLINK, NLM_F_MULTI, 7, link) + message(NLMSG_NOOP, 0, 7, b""))
    assert dump.feed(message(rtnl.RTM_NEWLINK, NLM_F_MULTI, 7, link) + message(NLMSG_DONE, NLM_F_MULTI, 7, b"\0" * 4))
    assert [k for k, _ in dump.messages] == [rtnl.RTM_NEWLINK] * 2 and dump.error == 0

    one = Answer(8, dump=False)
    assert one.feed(message(rtnl.RTM_NEWLINK, 0, 8, link)) and len(one.messages) == 1  # one plain message ends it

    refused = Answer(9, dump=True)
    assert refused.feed(message(rtnl.RTM_NEWLINK, NLM_F_MULTI, 9, link) + message(2, 0, 9, struct.pack("=i", -19)))
    assert refused.error == 19  # ENODEV, after what came before it

    acked = Answer(10, dump=False)
    assert not acked.feed(message(2, 0, 3, struct.pack("=i", -1)))  # someone else's error
    assert acked.feed(message(2, 0, 10, struct.pack("=i", 0))) and acked.error == 0 and acked.messages == []
