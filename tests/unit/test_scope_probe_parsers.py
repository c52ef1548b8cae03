"""The probe's parsers: /proc files (canned text from a real kernel, exact values, and
this machine's own /proc), /proc/net/tcp{,6}, and ctnetlink messages (a dump captured
from a real kernel, byte for byte, and events made from it)."""
from __future__ import annotations

import os
import socket
import struct

import pytest

from services.scope.probe import conntrack as ct
from services.scope.probe import procfs, procnet

STAT = (b"30788 (cat) R 30786 30786 16591 0 -1 4194304 98 0 0 0 7 3 0 0 20 0 1 0 220635 3133440 359 "
        b"18446744073709551615 94055145844736 94055145864617 140723060962624 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n")
LIMITS = (b"Limit                     Soft Limit           Hard Limit           Units     \n"
          b"Max cpu time              unlimited            unlimited            seconds   \n"
          b"Max open files            20000                20000                files     \n"
          b"Max locked memory         8388608              8388608              bytes     \n")
CPU_STAT = (b"cpu  129756 0 17421 287238 1237 0 3202 120 0 0\n"
            b"cpu0 54476 0 8852 153985 200 0 1920 59 0 0\n"
            b"cpu1 75279 0 8569 133252 1036 0 1281 61 0 0\n"
            b"intr 1 2 3\nctxt 42\n")
MEMINFO = (b"MemTotal:       24683792 kB\nMemFree:        23976872 kB\nMemAvailable:   24327892 kB\n"
           b"Buffers:            5420 kB\nCached:           515944 kB\nSwapCached:            0 kB\n")

TCP = b"""\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:2328 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 21873 1 0000000000000000 100 0 0 10 0
   1: 0100007F:2328 0100007F:9438 01 00000000:00000000 00:00000000 00000000     0        0 21874 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:9438 0100007F:2328 01 00000000:00000000 00:00000000 00000000     0        0 21875 1 0000000000000000 20 4 30 10 -1
   3: 0A00200A:C350 0100280A:1451 04 00000000:00000000 01:00000014 00000000     0        0 0 3 0000000000000000 20 4 30 10 -1
   4: 0A00200A:C351 0100280A:1451 06 00000000:00000000 03:00001777 00000000     0        0 0 3 0000000000000000
   5: 0A00200A:C352 0100280A:1451 08 00000000:00000000 00:00000000 00000000  1000        0 0 1 0000000000000000 20 4 1 10 -1
"""
TCP6 = b"""\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0000000000000000FFFF00000100007F:2328 0000000000000000FFFF00000100007F:9439 01 00000000:00000000 00:00000000 00000000     0        0 31000 1 0000000000000000 20 4 0 10 -1
   1: 00000000000000000000000001000000:1F90 00000000000000000000000001000000:A000 01 00000000:00000000 00:00000000 00000000     0        0 31001 1 0000000000000000 20 4 0 10 -1
   2: 0000000000000000FFFF00000100007F:2328 0000000000000000FFFF00000100007F:9438 01 00000000:00000000 00:00000000 00000000     0        0 21874 1 0000000000000000 20 4 0 10 -1
"""

# A real ctnetlink dump (IPCTNL_MSG_CT_NEW answer + NLMSG_DONE): one TCP flow
# 127.0.0.1:37944 -> 127.0.0.1:9000, ESTABLISHED, captured in a scratch namespace.
DUMP = bytes.fromhex(
    "d400000000010200010000006b5c0000020000003400018014000180080001007f000001080002007f0000011c000280"
    "0500010006000000060002009438000006000300232800003400028014000180080001007f000001080002007f000001"
    "1c00028005000100060000000600020023280000060003009438000008000300000000"
    "0e080008000000000008000c007e08e5ab08000b0000000001080007000006977f300004802c000180050001000300"
    "0000050002000a000000050003000a000000060004002300000006000500230000001400000003000200010000006b5c"
    "000000000000")


def test_pid_stat_canned():
    s = procfs.parse_pid_stat(STAT)
    assert (s.pid, s.comm, s.ppid, s.jiffies, s.threads, s.start_ticks, s.rss_pages, s.rss_limit) == (
        30788, "cat", 30786, 10, 1, 220635, 359, 2**64 - 1)


def test_pid_stat_comm_with_parens_and_spaces():
    line = STAT.replace(b"(cat)", b"(a) b (c))")
    s = procfs.parse_pid_stat(line)
    assert s.comm == "a) b (c)" and s.ppid == 30786 and s.threads == 1


@pytest.mark.parametrize("bad", [b"", b"1 cat R 1", b"1 (cat) R 1 2 3"])
def test_pid_stat_malformed(bad):
    with pytest.raises(procfs.ProcFormatError):
        procfs.parse_pid_stat(bad)


def test_pid_stat_of_this_machine():
    with open("/proc/self/stat", "rb") as f:
        s = procfs.parse_pid_stat(f.read())
    assert s.pid == os.getpid() and s.ppid == os.getppid()
    assert s.threads >= 1 and s.rss_pages > 0 and s.start_ticks > 0


@pytest.mark.parametrize("raw, comm, expected", [
    (b"/bin/bash\0/srv/sample/init.sh\0", "bash", ("/bin/bash", "/bin/bash /srv/sample/init.sh ")),
    (b"sleep\x000.5\0", "sleep", ("sleep", "sleep 0.5 ")),
    (b"", "kthreadd", ("[kthreadd]", "")),
    (b"nginx: worker process", "nginx", ("nginx: worker process", "nginx: worker process")),
])
def test_cmdline_as_scope_shows_it(raw, comm, expected):
    assert procfs.parse_cmdline(raw, comm) == expected


def test_limits_cpu_meminfo_loadavg_uptime_canned():
    assert procfs.parse_open_files_limit(LIMITS) == 20000
    assert procfs.parse_open_files_limit(LIMITS.replace(b"20000                20000", b"unlimited  unlimited")) == \
        2**64 - 1
    assert procfs.parse_open_files_limit(b"") == 0
    cpu = procfs.parse_cpu_times(CPU_STAT)
    assert cpu == procfs.CpuTimes(total=129756 + 17421 + 287238 + 1237 + 3202 + 120, idle=287238 + 1237, cpus=2)
    assert procfs.parse_meminfo(MEMINFO) == ((24683792 - 23976872 - 5420 - 515944) * 1024, 24683792 * 1024)
    assert procfs.parse_loadavg(b"1.90 2.08 1.61 1/92 30794\n") == 1.9
    assert procfs.parse_uptime(b"2206.96 2872.38\n") == 2206
    with pytest.raises(procfs.ProcFormatError):
        procfs.parse_cpu_times(b"intr 1\n")


def test_host_files_of_this_machine():
    def read(name):
        with open(f"/proc/{name}", "rb") as f:
            return f.read()
    cpu = procfs.parse_cpu_times(read("stat"))
    assert cpu.cpus == os.cpu_count() and cpu.total > cpu.idle > 0
    used, total = procfs.parse_meminfo(read("meminfo"))
    assert 0 < used < total
    assert procfs.parse_loadavg(read("loadavg")) >= 0 and procfs.parse_uptime(read("uptime")) > 0
    assert procfs.parse_open_files_limit(read("self/limits")) > 0


def test_cpu_percent_is_of_one_cpu():
    # 100 ticks of a process over 200 ticks of two CPUs (one second): one CPU busy
    assert procfs.cpu_percent(100, 200, 2) == 100.0
    assert procfs.cpu_percent(50, 200, 2) == 50.0
    assert procfs.cpu_percent(5, 0, 2) == 0.0


def test_tcp_rows_kept_as_scope_keeps_them():
    conns = procnet.parse_tcp(TCP)
    assert [(c.local_addr, c.local_port, c.remote_addr, c.remote_port, c.state, c.inode) for c in conns] == [
        ("127.0.0.1", 9000, "127.0.0.1", 37944, 1, 21874),
        ("127.0.0.1", 37944, "127.0.0.1", 9000, 1, 21875),
        ("10.32.0.10", 50000, "10.40.0.1", 5201, 4, 0),  # FIN_WAIT1, orphaned: kept
        ("10.32.0.10", 50002, "10.40.0.1", 5201, 8, 0),  # CLOSE_WAIT
    ], "LISTEN (0A) and TIME_WAIT (06) rows are not connections"


def test_tcp6_mapped_addresses_and_one_socket_once():
    seen: set[int] = set()
    v4 = procnet.parse_tcp(TCP, seen)
    v6 = procnet.parse_tcp(TCP6, seen)
    assert len(v4) == 4
    assert [(c.local_addr, c.local_port, c.remote_addr, c.remote_port, c.inode) for c in v6] == [
        ("127.0.0.1", 9000, "127.0.0.1", 37945, 31000),
        ("::1", 8080, "::1", 40960, 31001),
    ], "inode 21874 was already read from tcp"


def test_tcp_address_errors():
    with pytest.raises(procfs.ProcFormatError):
        procnet.decode_address("0100007F")  # no port: 'bad address length'
    with pytest.raises(procfs.ProcFormatError):
        procnet.decode_address("ZZ00007F:0050")


def test_tcp_of_this_machine_shows_our_connection():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    cli = socket.create_connection(srv.getsockname())
    acc, _ = srv.accept()
    try:
        with open("/proc/self/net/tcp", "rb") as f:
            conns = procnet.parse_tcp(f.read())
        port = srv.getsockname()[1]
        ours = {(c.local_port, c.remote_port): c for c in conns}
        client = ours[(cli.getsockname()[1], port)]
        server = ours[(port, cli.getsockname()[1])]
        assert client.inode == os.fstat(cli.fileno()).st_ino
        assert server.inode == os.fstat(acc.fileno()).st_ino
        assert client.state == server.state == procnet.TCP_ESTABLISHED
    finally:
        for s in (cli, acc, srv):
            s.close()


# -- ctnetlink --------------------------------------------------------------------------

def test_dump_request_golden():
    # nlmsghdr: len 20, type CTNETLINK<<8 | CT_GET, flags REQUEST|DUMP, seq 1, pid 0; nfgenmsg AF_UNSPEC v0
    assert ct.dump_request() == bytes.fromhex("14000000 0101 0103 01000000 00000000 00 00 0000")


def test_real_dump_parsed():
    flows, done, error = ct.parse_messages(DUMP, dump=True)
    assert done and error == 0
    assert flows == [ct.Flow(id=0x7E08E5AB, proto=6, orig=ct.Tuple("127.0.0.1", "127.0.0.1", 37944, 9000),
                             reply=ct.Tuple("127.0.0.1", "127.0.0.1", 9000, 37944), tcp_state=3, status=0x0E,
                             event="dump")]
    assert flows[0].four_tuple() == ct.Tuple("127.0.0.1", "127.0.0.1", 37944, 9000)


def _as_event(kind: int, state: int | None = None) -> bytes:
    """The dump's entry re-typed as an event (CT_NEW = update, CT_DELETE = destroy),
    optionally with another TCP state."""
    length = struct.unpack_from("=I", DUMP)[0]
    msg = bytearray(DUMP[:length])
    struct.pack_into("=H", msg, 4, (1 << 8) | kind)
    if state is not None:
        at = bytes(msg).index(bytes.fromhex("0500010003000000"))  # CTA_PROTOINFO_TCP_STATE = 3
        msg[at + 4] = state
    return bytes(msg)


def test_events_update_destroy_and_the_tracker():
    tracker = ct.FlowTracker()
    tracker.seed(ct.parse_messages(DUMP, dump=True)[0])
    assert [f.id for f in tracker.walk()] == [0x7E08E5AB]
    destroy = ct.parse_messages(_as_event(ct.IPCTNL_MSG_CT_DELETE), dump=False)[0]
    assert [f.event for f in destroy] == ["destroy"]
    tracker.on_event(destroy[0])
    assert [f.event for f in tracker.walk()] == ["dump"], "an ended flow is reported once more"
    assert tracker.walk() == []

    update = ct.parse_messages(_as_event(ct.IPCTNL_MSG_CT_NEW), dump=False)[0][0]
    assert update.event == "update" and update.tcp_state == 3
    tracker.on_event(update)
    time_wait = ct.parse_messages(_as_event(ct.IPCTNL_MSG_CT_NEW, state=7), dump=False)[0][0]
    tracker.on_event(time_wait)
    assert [f.tcp_state for f in tracker.walk()] == [7] and not tracker.active


def test_tracker_ignores_flows_never_updated_and_other_protocols():
    tracker = ct.FlowTracker()
    flow = ct.parse_messages(DUMP, dump=True)[0][0]
    tracker.on_event(ct.Flow(**{**flow.__dict__, "event": "destroy"}))
    tracker.on_event(ct.Flow(**{**flow.__dict__, "event": "update", "proto": 17}))
    tracker.seed([ct.Flow(**{**flow.__dict__, "tcp_state": 7})])  # TIME_WAIT in a dump: not active
    assert tracker.walk() == []


def test_tracker_is_bounded():
    tracker = ct.FlowTracker(max_flows=2)
    flow = ct.parse_messages(DUMP, dump=True)[0][0]
    for i in range(5):
        tracker.on_event(ct.Flow(**{**flow.__dict__, "id": i, "event": "update"}))
    assert list(tracker.active) == [3, 4] and tracker.dropped == 3


def test_dnat_flow_names_the_real_server():
    flow = ct.Flow(1, 6, ct.Tuple("10.32.0.2", "10.96.0.1", 40000, 80), ct.Tuple("10.40.0.7", "10.32.0.2", 8080,
                                                                                   40000), 3, 0x30)
    assert flow.four_tuple() == ct.Tuple("10.32.0.2", "10.40.0.7", 40000, 8080)


def test_garbage_and_errors():
    assert ct.parse_messages(b"\x01\x02\x03", dump=True) == ([], False, 0)
    err = struct.pack("=IHHII", 36, 2, 0, 1, 0) + struct.pack("=i", -1) + b"\0" * 16
    assert ct.parse_messages(err, dump=True) == ([], False, -1)
    truncated = bytearray(DUMP[:0xd4])
    struct.pack_into("=H", truncated, 20, 0xFF)  # the first attribute claims 255 bytes
    assert ct.parse_messages(bytes(truncated), dump=True)[0] == []
