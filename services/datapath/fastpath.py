"""The fastpath: a kernel VXLAN device on UDP 6784 enslaved to the `weave` bridge, used
only between weave-py peers (overlay name overlay_switch.FASTPATH; Weave's own "fastdp"
is Open vSwitch with a per-pair VNI, which this is not, and we never advertise it).

    (container) -+ weave +- vethwe-bridge -- vethwe-pcap   (sleeve captures here)
                         +- vxlan-6784  (isolated port) --- UDP 6784 --> peers

Design (documented choices):
- One VNI for every weave-py peer: VNI = 0xFFFFFF. Weave's (dst<<12)|src is per pair
  and cannot be one Linux device; a constant VNI is enough because a device reaches only
  the peers we give it FDB entries for, and the receiving device accepts only its VNI.
- FDB (netlink, shared/netlink.py, NTF_SELF so entries go to the VXLAN device's table, not the
  bridge's; NUD_PERMANENT): per peer on the fastpath an all-zeros entry to its underlay
  IP (broadcast, multicast and unknown unicast are replicated to those peers), and per
  allowed peer a unicast entry for its bridge MAC (= its peer name), which the
  heartbeats use. Unicast entries for the peers' container MACs are learnt by the
  device (VXLAN learning on: src MAC -> outer src IP of received frames), which keeps
  them exact without a MAC feed; when a peer falls back to sleeve its learnt entries
  and the bridge's entries on the VXLAN port are flushed, so frames go through sleeve,
  and the MACs flushed are handed to the sleeve's MAC cache (`forget` returns them).
- Both vxlan-6784 and vethwe-bridge are *isolated* bridge ports: frames arriving over
  the VXLAN never reach the sleeve capture (no learning of remote MACs as local, no
  re-flooding over sleeve) and frames sleeve injects never leave over the VXLAN.
  Consequence: the fastpath only carries traffic between directly connected peers
  (no relaying); the tests use a full mesh.
- MTU: the overlay MTU reported to gossip (`mtu=` in `weave status connections`) is
  underlay MTU - 50 (IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14): frames up to it
  cross unfragmented. The device itself gets the bridge's MTU (65535 by default, which
  containers inherit, attach.py), capped at MAX_DEVICE_MTU = 65485 (the largest frame
  an IPv4 packet can carry): with a device MTU of 1450 the bridge would silently drop
  every larger frame from a container (TCP stalls); larger frames instead go out as
  one VXLAN datagram the kernel fragments on the underlay (outer DF unset), as sleeve's
  superframes do. Containers given an MTU <= underlay - 50 never fragment.
- Source filter: the kernel's VXLAN device takes any datagram to UDP 6784 with its
  VNI, whoever sends it (a wrong VNI it drops itself). So only the peers allowed on
  the fastpath may send to it (host_iptables.py: an ipset of their underlay IPs and
  one rule at the top of INPUT). The set is kept across a datapath restart (pruned
  after the first snapshot, like the FDB) and removed with the device.
- Heartbeats (overlay_switch.py decides when): an Ethernet frame of ethertype
  HB_ETHERTYPE from our bridge MAC to the peer's, written with an AF_PACKET socket on
  the VXLAN device, so it is encapsulated exactly as data is; the peer reads it with an
  AF_PACKET socket on its VXLAN device with a BPF filter on the ethertype (the bridge
  then hands it to the host stack, which drops the unknown ethertype).
"""
from __future__ import annotations

import logging
import socket
import struct
import subprocess
import time
from dataclasses import dataclass

from shared.netlink import IPRoute

from services.datapath.sockopts import attach_half_word_filter, big_buffers
from services.datapath.host_iptables import HostIptables
from services.datapath.overlay_switch import ZERO_MAC
from shared.netlink import NetlinkError
from shared.weave.peer_name import PeerName

log = logging.getLogger("weave.datapath.fastpath")

DEVICE = "vxlan-6784"
PORT = 6784
VNI = 0xFFFFFF
OVERHEAD = 50
MAX_DEVICE_MTU = 65535 - OVERHEAD
HB_ETHERTYPE = 0x88B5  # IEEE local experimental
HB_MAGIC = b"WPVX"
HB_VERSION = 1
_HB = struct.Struct("!6s6sH4sBBQ")
HB_HEARING = 1  # flags: the sender hears us
HB_IDLE = 2  # flags: the sender's next heartbeat comes after overlay_switch.IDLE_HEARTBEAT_S
HB_LEN = 60
NTF_SELF = 0x02
NUD_PERMANENT = 0x80
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SO_TIMESTAMPNS = 35
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23
HB_RCVBUF = 1 << 20
"""The heartbeat socket's receive buffer: read once a beat at rest, it holds a beat's
heartbeats from ~1,000 peers (each 60-byte frame takes ~1 KB of buffer)."""
_TIMESPEC = struct.Struct("@qq")


# -- sans-I/O: heartbeat frames and addresses --------------------------------------------
def mac_str(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def encode_heartbeat(src: PeerName, dst: PeerName, conn_uid: int, hearing: bool, idle: bool = False) -> bytes:
    """A heartbeat from peer `src` to peer `dst`, addressed by their bridges' MACs (a
    peer's bridge MAC is its name)."""
    frame = _HB.pack(dst.to_bytes6(), src.to_bytes6(), HB_ETHERTYPE, HB_MAGIC, HB_VERSION,
                     (HB_HEARING if hearing else 0) | (HB_IDLE if idle else 0), conn_uid & (2**64 - 1))
    return frame.ljust(HB_LEN, b"\0")


@dataclass(frozen=True)
class Heartbeat:
    src: PeerName
    dst: PeerName
    conn_uid: int
    hearing: bool
    idle: bool = False


def decode_heartbeat(frame: bytes) -> Heartbeat | None:
    if len(frame) < _HB.size:
        return None
    dst, src, etype, magic, version, flags, uid = _HB.unpack_from(frame)
    if etype != HB_ETHERTYPE or magic != HB_MAGIC or version != HB_VERSION:
        return None
    return Heartbeat(PeerName.from_bytes6(src), PeerName.from_bytes6(dst), uid, bool(flags & HB_HEARING),
                     bool(flags & HB_IDLE))


def device_packets(proc_net_dev: str, device: str = DEVICE) -> int | None:
    """Frames `device` received plus sent, from the text of /proc/net/dev (None if it is
    not there)."""
    for line in proc_net_dev.splitlines():
        name, sep, counters = line.partition(":")
        if sep and name.strip() == device:
            fields = counters.split()
            return int(fields[1]) + int(fields[9])
    return None


def fastpath_mtu(underlay_mtu: int) -> int:
    return underlay_mtu - OVERHEAD


def ip_of(addr: str) -> str:
    """ip of an "ip:port" (IPv4) string."""
    return addr.rpartition(":")[0] if ":" in addr else addr


# -- I/O: the device and its FDB (blocking: call through asyncio.to_thread) -------------
def underlay_mtu(host_ip: str) -> int:
    with IPRoute() as ipr:
        addrs = ipr.get_addr(address=host_ip)
        if not addrs:
            return 1500
        return ipr.get_links(addrs[0]["index"])[0].get_attr("IFLA_MTU")


def _link(ipr: IPRoute, name: str):
    found = ipr.link_lookup(ifname=name)
    return ipr.get_links(found[0])[0] if found else None


def _isolate(name: str, on: bool) -> None:
    subprocess.run(["bridge", "link", "set", "dev", name, "isolated", "on" if on else "off"],
                   check=False, capture_output=True)


def device_mtu(bridge_mtu: int) -> int:
    return min(bridge_mtu, MAX_DEVICE_MTU)


def ensure_device(host_ip: str, bridge: str, bridge_port: str) -> int:
    """vxlan-6784 (VNI, local host_ip, dstport 6784, learning, MTU device_mtu(bridge's))
    on `bridge`, up, isolated;
    an existing device of the right kind is reused (a restarted datapath keeps it, and
    the peers' traffic keeps flowing). Returns its ifindex."""
    with IPRoute() as ipr:
        link = _link(ipr, DEVICE)
        if link is not None:
            info = link.get_attr("IFLA_LINKINFO")
            data = info.get_attr("IFLA_INFO_DATA") if info else None
            ok = (info is not None and info.get_attr("IFLA_INFO_KIND") == "vxlan" and data is not None
                  and data.get_attr("IFLA_VXLAN_ID") == VNI and data.get_attr("IFLA_VXLAN_PORT") == PORT)
            if not ok:
                ipr.link("del", index=link["index"])
                link = None
        if link is None:
            ipr.link("add", ifname=DEVICE, kind="vxlan", vxlan_id=VNI, vxlan_local=host_ip, vxlan_port=PORT,
                     vxlan_learning=1)
            link = _link(ipr, DEVICE)
        index = link["index"]
        br = _link(ipr, bridge)
        ipr.link("set", index=index, mtu=device_mtu(br.get_attr("IFLA_MTU")), master=br["index"], state="up")
    _isolate(DEVICE, True)
    _isolate(bridge_port, True)
    try:  # a bridge port needs no IPv6 of its own (no link-local ND/MLD from the device to peers)
        with open(f"/proc/sys/net/ipv6/conf/{DEVICE}/disable_ipv6", "w") as f:
            f.write("1")
    except OSError:
        pass
    return index


def destroy_device(bridge_port: str) -> bool:
    with IPRoute() as ipr:
        link = _link(ipr, DEVICE)
        if link is not None:
            ipr.link("del", index=link["index"])
    _isolate(bridge_port, False)
    HostIptables().remove_source_filter(PORT)
    return link is not None


def fdb_set(index: int, mac: str, ip: str, present: bool) -> None:
    """Add (append: several all-zeros entries coexist) or remove one static entry."""
    with IPRoute() as ipr:
        try:
            ipr.fdb("append" if present else "del", ifindex=index, lladdr=mac, dst=ip, flags=NTF_SELF,
                    state=NUD_PERMANENT)
        except NetlinkError as exc:
            if exc.code not in (17, 2):  # EEXIST on add, ENOENT on delete: already so
                raise


def fdb_entries(index: int) -> list[tuple[str, str | None, int]]:
    """(mac, dst ip, state) of the VXLAN device's own table."""
    with IPRoute() as ipr:
        out = []
        for msg in ipr.fdb("dump", ifindex=index):
            if msg["ifindex"] != index:
                continue
            out.append((msg.get_attr("NDA_LLADDR"), msg.get_attr("NDA_DST"), msg["state"]))
        return out


def prune(index: int, keep_ips: set[str], keep_flood_ips: set[str]) -> int:
    """Remove our static entries towards IPs not in keep_ips, and flood entries towards
    IPs not in keep_flood_ips: a restarted datapath re-adopts the device with the old
    process's entries, some for peers that left meanwhile or are not (yet) back on the
    fastpath. Returns how many were removed."""
    removed = 0
    for mac, ip, state in fdb_entries(index):
        keep = keep_flood_ips if mac == ZERO_MAC else keep_ips
        if ip is not None and ip not in keep and state & NUD_PERMANENT:
            fdb_set(index, mac, ip, False)
            removed += 1
    return removed


def forget(index: int, ip: str) -> list[str]:
    """Drop what was learnt towards `ip` (VXLAN table) and on the VXLAN port (bridge
    table). Returns the MACs the VXLAN table had learnt towards `ip` (the containers
    behind that peer), for the sleeve."""
    learnt = []
    with IPRoute() as ipr:
        for msg in ipr.fdb("dump", ifindex=index):
            mac = msg.get_attr("NDA_LLADDR")
            if (msg["ifindex"] == index and msg.get_attr("NDA_DST") == ip and not msg["state"] & NUD_PERMANENT
                    and mac != ZERO_MAC):
                learnt.append(mac)
                try:
                    ipr.fdb("del", ifindex=index, lladdr=mac, dst=ip, flags=NTF_SELF)
                except NetlinkError:
                    pass
    subprocess.run(["ip", "link", "set", "dev", DEVICE, "type", "bridge_slave", "fdb_flush"],
                   check=False, capture_output=True)
    return learnt


_ANC_SPACE = socket.CMSG_SPACE(_TIMESPEC.size)


def received_at(ancillary: list[tuple[int, int, bytes]]) -> float:
    """The kernel's receive time (SO_TIMESTAMPNS) from a recvmsg's ancillary data; the
    present time if it is missing."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(data)
            return sec + nsec / 1e9
    return time.time()


class HeartbeatSocket:
    """AF_PACKET on the VXLAN device: writes heartbeats into it, reads the peers' (only
    frames of HB_ETHERTYPE pass the kernel filter; our own outgoing ones are skipped),
    each with the time the kernel received it, so that reading them late (once a beat)
    loses nothing of when they came."""

    def __init__(self, ifname: str = DEVICE) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        attach_half_word_filter(self.sock, 12, HB_ETHERTYPE)  # the Ethernet type
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        big_buffers(self.sock, HB_RCVBUF, send=False)
        try:  # else the kernel clones every frame the device sends for this socket (dev_queue_xmit_nit)
            self.sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        except OSError:  # kernels < 4.20: outgoing frames are skipped in recv_all
            pass
        self.sock.bind((ifname, ETH_P_ALL))
        self.sock.setblocking(False)
        self.ifname = ifname

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, frame: bytes) -> bool:
        try:
            self.sock.send(frame)
            return True
        except OSError as exc:
            log.debug("heartbeat not sent: %s", exc)
            return False

    def recv_all(self, limit: int = 4096) -> list[tuple[Heartbeat, float]]:
        """The heartbeats waiting, each with the wall-clock time the kernel received it."""
        out = []
        for _ in range(limit):
            try:
                data, anc, _flags, addr = self.sock.recvmsg(2048, _ANC_SPACE)
            except BlockingIOError:
                break
            except OSError as exc:
                log.debug("heartbeat read: %s", exc)
                break
            if addr[2] == PACKET_OUTGOING:
                continue
            hb = decode_heartbeat(data)
            if hb is not None:
                out.append((hb, received_at(anc)))
        return out

    def close(self) -> None:
        self.sock.close()
