"""The `weave-net` CNI plugin (CNI spec 1.0.0; also answers 0.3.x and 0.4.0 configs).

Invoked by a container runtime: CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME,
CNI_PATH in the environment and the network config on stdin; the result or a CNI error
JSON on stdout. As Weave Net's plugin (weave:plugin/net/cni.go) it takes an address from
weave's IPAM over the local HTTP API (POST /ip/{id}, or /ip/{id}/{ip}/{len} with
ipam.subnet), creates the veth itself (vethwepl<id> on the weave bridge, CNI_IFNAME in
the pod), and routes via a gateway: the bridge's address in the pod's subnet, exposing
one (weave:expose) when the bridge has none. DEL is idempotent: a missing namespace or
interface is not an error, and the address is released. Commands: ADD, DEL, CHECK,
VERSION, STATUS.
"""
from __future__ import annotations

import ipaddress
import json
import os
import sys
from pathlib import Path
from typing import Any

SUPPORTED = ("0.3.0", "0.3.1", "0.4.0", "1.0.0")
# CNI spec error codes
INCOMPATIBLE, UNSUPPORTED_FIELD, UNKNOWN_CONTAINER, INVALID_ENV, IO_FAILURE, DECODE, INVALID_CONFIG = 1, 2, 3, 4, 5, 6, 7
TRY_AGAIN, NOT_AVAILABLE = 11, 50


class CniError(Exception):
    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code, self.msg, self.details = code, msg, details


def _env(name: str, required: bool = True) -> str:
    value = os.environ.get(name, "")
    if required and not value:
        raise CniError(INVALID_ENV, f"{name} is not set", "the runtime must set it for this command")
    return value


def _read_config(raw: str) -> dict[str, Any]:
    try:
        conf = json.loads(raw or "{}")
    except ValueError as exc:
        raise CniError(DECODE, "network config on stdin is not JSON", str(exc)) from None
    version = conf.get("cniVersion", "")
    if version not in SUPPORTED:
        raise CniError(INCOMPATIBLE, f"CNI version {version!r} is not supported",
                       f"supported: {', '.join(SUPPORTED)}")
    if conf.get("ipam", {}).get("type") not in (None, "", "weave-ipam"):
        raise CniError(UNSUPPORTED_FIELD, "delegating IPAM to another plugin is not supported",
                       "leave ipam.type empty or set it to weave-ipam")
    for field in ("isGateway", "ipMasq"):
        if conf.get(field):
            raise CniError(UNSUPPORTED_FIELD, f"{field} is not supported by weave-net")
    return conf


def _state_dir(conf: dict) -> Path:
    return Path(conf.get("weave_state_dir") or os.environ.get("WEAVE_STATE_DIR", "/var/lib/weave"))


# -- talking to the host's weave -----------------------------------------------------
def _api(method: str, path: str) -> str:
    from weavectl.api import call
    from weavectl.launcher import LaunchError

    try:
        return call(method, path)
    except LaunchError as exc:
        code = NOT_AVAILABLE if "cannot reach" in exc.reason else TRY_AGAIN
        raise CniError(code, f"weave {method} {path}: {exc.reason}", exc.hint) from None


def _allocate(container_id: str, conf: dict) -> ipaddress.IPv4Interface:
    subnet = conf.get("ipam", {}).get("subnet")
    path = f"/ip/{container_id}"
    if subnet:
        net = ipaddress.ip_network(subnet, strict=False)
        path += f"/{net.network_address}/{net.prefixlen}"
    return ipaddress.ip_interface(_api("POST", path).strip())


def _gateway(conf: dict, addr: ipaddress.IPv4Interface) -> ipaddress.IPv4Address:
    """The bridge's address in the pod's subnet, exposing one if the bridge has none there."""
    from shared import subjects
    from shared.schemas.datapath import Attachment, ExposeRequest, PsReply, PsRequest
    from weavectl.launcher import LaunchError, bus_request

    state = _state_dir(conf)
    try:
        reply = bus_request(state, subjects.request("datapath", "ps"), PsRequest(containers=("weave:expose",)),
                            PsReply)
        for att in reply.attachments:
            for cidr in att.cidrs:
                if ipaddress.ip_interface(cidr).ip in addr.network:
                    return ipaddress.ip_interface(cidr).ip
        exposed = bus_request(state, subjects.request("datapath", "expose"),
                              ExposeRequest(addrs=(f"net:{addr.network}",)), Attachment, timeout=30.0)
    except LaunchError as exc:
        raise CniError(NOT_AVAILABLE, f"cannot reach the datapath: {exc.reason}", exc.hint) from None
    except Exception as exc:
        raise CniError(TRY_AGAIN, f"cannot find or expose a gateway: {exc}") from None
    for cidr in exposed.cidrs:
        if ipaddress.ip_interface(cidr).ip in addr.network:
            return ipaddress.ip_interface(cidr).ip
    raise CniError(TRY_AGAIN, f"the bridge has no address in {addr.network}")


# -- commands --------------------------------------------------------------------------
def cmd_add(conf: dict) -> dict:
    from services.datapath import attach
    from services.datapath.netns import DatapathError, open_namespace

    container_id, netns, ifname = _env("CNI_CONTAINERID"), _env("CNI_NETNS"), _env("CNI_IFNAME")
    try:
        ns = open_namespace(netns)
    except DatapathError as exc:
        raise CniError(UNKNOWN_CONTAINER, f"network namespace {netns}: {exc}") from None
    with ns:
        existing = _interface(ns, ifname)
        if existing is not None:
            raise CniError(INVALID_CONFIG, f"container {container_id} already has {ifname}",
                           "DEL it first, or use another CNI_IFNAME")
        addr = _allocate(container_id, conf)
        gateway = _gateway(conf, addr)
        try:
            att = attach.attach(netns, [addr], ifname=ifname, multicast_route=False)
            routes = conf.get("ipam", {}).get("routes") or [{"dst": "0.0.0.0/0"}]
            _add_routes(ns, ifname, routes, gateway)
            if conf.get("hairpinMode"):
                _hairpin(att.host_ifname)
        except Exception as exc:
            _api("DELETE", f"/ip/{container_id}")
            if isinstance(exc, DatapathError):
                raise CniError(IO_FAILURE, f"attaching {netns}: {exc}") from None
            raise
    return _result(conf, netns, ifname, att.mac, addr, gateway, routes)


def _result(conf: dict, netns: str, ifname: str, mac: str, addr, gateway, routes: list[dict]) -> dict:
    version = conf["cniVersion"]
    ip = {"address": str(addr), "gateway": str(gateway), "interface": 0}
    if version < "1.0.0":
        ip["version"] = "4"
    result = {"cniVersion": version, "interfaces": [{"name": ifname, "mac": mac, "sandbox": netns}],
              "ips": [ip], "routes": [{"dst": r["dst"], "gw": r.get("gw", str(gateway))} for r in routes]}
    if conf.get("dns"):
        result["dns"] = conf["dns"]
    return result


def _interface(ns, ifname: str):
    def look():
        with ns.iproute() as ipr:
            idx = ipr.link_lookup(ifname=ifname)
            return ipr.get_links(idx[0])[0] if idx else None

    return ns.run(look)


def _add_routes(ns, ifname: str, routes: list[dict], gateway) -> None:
    def add():
        with ns.iproute() as ipr:
            index = ipr.link_lookup(ifname=ifname)[0]
            for r in routes:
                gw = r.get("gw", str(gateway))
                ipr.route("replace", dst=r["dst"], gateway=gw, oif=index)

    ns.run(add)


def _hairpin(host_ifname: str) -> None:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=host_ifname)[0]
        ipr.brport("set", index=index, hairpin_mode=1)


def cmd_del(conf: dict) -> None:
    from services.datapath.netns import DatapathError, open_namespace

    container_id = _env("CNI_CONTAINERID")
    netns, ifname = _env("CNI_NETNS", required=False), _env("CNI_IFNAME", required=False) or "eth0"
    if netns:
        try:
            with open_namespace(netns) as ns:
                def delete():
                    with ns.iproute() as ipr:
                        idx = ipr.link_lookup(ifname=ifname)
                        if idx:
                            ipr.link("del", index=idx[0])
                ns.run(delete)
        except DatapathError:
            pass  # the namespace is gone already: nothing to remove
    try:
        _api("DELETE", f"/ip/{container_id}")
    except CniError as exc:
        if exc.code == NOT_AVAILABLE:
            raise
        # "no addresses" is not an error for DEL


def cmd_check(conf: dict) -> None:
    from services.datapath.netns import DatapathError, open_namespace

    container_id, netns, ifname = _env("CNI_CONTAINERID"), _env("CNI_NETNS"), _env("CNI_IFNAME")
    prev = conf.get("prevResult") or {}
    try:
        with open_namespace(netns) as ns:
            link = _interface(ns, ifname)
            if link is None:
                raise CniError(UNKNOWN_CONTAINER, f"{ifname} is missing in {netns}")
            want = [ip["address"] for ip in prev.get("ips", [])]
            have = ns.run(lambda: _addresses(ns, link["index"]))
    except DatapathError as exc:
        raise CniError(UNKNOWN_CONTAINER, f"network namespace {netns}: {exc}") from None
    missing = [a for a in want if a not in have]
    if missing:
        raise CniError(IO_FAILURE, f"{container_id}: {ifname} lacks {', '.join(missing)}", f"it has {have}")


def _addresses(ns, index: int) -> list[str]:
    with ns.iproute() as ipr:
        return [f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}" for a in ipr.get_addr(index=index, family=2)]


def cmd_status(conf: dict) -> None:
    _api("GET", "/status")


def main() -> int:
    command = os.environ.get("CNI_COMMAND", "")
    version = "1.0.0"
    try:
        if command == "VERSION":
            print(json.dumps({"cniVersion": "1.0.0", "supportedVersions": list(SUPPORTED)}))
            return 0
        conf = _read_config(sys.stdin.read())
        version = conf["cniVersion"]
        if command == "ADD":
            print(json.dumps(cmd_add(conf)))
        elif command == "DEL":
            cmd_del(conf)
        elif command == "CHECK":
            cmd_check(conf)
        elif command == "STATUS":
            cmd_status(conf)
        else:
            raise CniError(INVALID_ENV, f"unknown CNI_COMMAND {command!r}", "ADD, DEL, CHECK, STATUS or VERSION")
        return 0
    except CniError as exc:
        print(json.dumps({"cniVersion": version, "code": exc.code, "msg": exc.msg, "details": exc.details}))
        return 1
    except Exception as exc:  # never a traceback to the runtime: a CNI error it can log
        print(json.dumps({"cniVersion": version, "code": IO_FAILURE, "msg": f"{type(exc).__name__}: {exc}",
                          "details": ""}))
        return 1


if __name__ == "__main__":
    sys.exit(main())
