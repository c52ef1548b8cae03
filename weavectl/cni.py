"""The `weave-net` CNI plugin (CNI spec 1.0.0; also answers 0.3.x and 0.4.0 configs).

Invoked by a container runtime: CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME,
CNI_PATH in the environment and the network config on stdin; the result or a CNI error
JSON on stdout. It asks the host's datapath to attach the pod's namespace (weave IPAM's
address, or one in ipam.subnet; CNI_IFNAME inside the pod, vethwepl<id> on the bridge),
so IPAM, weaveDNS and the policy controller know the pod as they know any attached
container (Weave Net's plugin makes the veth itself and calls only IPAM; here npc
would otherwise not know the pod and refuse its traffic). Routes go via a gateway: the
bridge's address in the pod's subnet, exposing one (weave:expose) when the bridge has
none. DEL is idempotent: a missing namespace or interface is not an error, and the
address is released. Commands: ADD, DEL, CHECK, VERSION, STATUS.
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


def _bus(conf: dict, verb: str, msg, reply_type, timeout: float = 30.0):
    """A request to the host's datapath; its error codes become CNI codes."""
    from shared import subjects
    from shared.bus import BusError
    from weavectl.launcher import LaunchError, bus_request

    try:
        return bus_request(_state_dir(conf), subjects.request("datapath", verb), msg, reply_type, timeout=timeout)
    except LaunchError as exc:
        raise CniError(NOT_AVAILABLE, f"weave is not running here: {exc.reason}", exc.hint) from None
    except BusError as exc:
        code = {"not_found": UNKNOWN_CONTAINER, "bad_request": INVALID_CONFIG, "conflict": INVALID_CONFIG,
                "unavailable": TRY_AGAIN, "timeout": TRY_AGAIN}.get(exc.code, IO_FAILURE)
        raise CniError(code, f"weave {verb}: {exc.description}") from None


def _pod_namespace() -> str:
    """K8S_POD_NAMESPACE from CNI_ARGS (k=v;k=v), else default."""
    args = dict(kv.split("=", 1) for kv in os.environ.get("CNI_ARGS", "").split(";") if "=" in kv)
    return args.get("K8S_POD_NAMESPACE", "default")


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
    from shared.netns import NetnsError as DatapathError, open_namespace
    from shared.schemas.datapath import Attachment, AttachRequest

    container_id, netns, ifname = _env("CNI_CONTAINERID"), _env("CNI_NETNS"), _env("CNI_IFNAME")
    try:
        ns = open_namespace(netns)
    except DatapathError as exc:
        raise CniError(UNKNOWN_CONTAINER, f"network namespace {netns}: {exc}") from None
    with ns:
        if _interface(ns, ifname) is not None:
            raise CniError(INVALID_CONFIG, f"container {container_id} already has {ifname}",
                           "DEL it first, or use another CNI_IFNAME")
        subnet = conf.get("ipam", {}).get("subnet")
        att = _bus(conf, "attach", AttachRequest(container=netns, addrs=(f"net:{subnet}",) if subnet else (),
                                                 ifname=ifname, namespace=_pod_namespace(),
                                                 multicast_route=False), Attachment)
        addr = ipaddress.ip_interface(att.cidrs[0])
        try:
            gateway = _gateway(conf, addr)
            routes = conf.get("ipam", {}).get("routes") or [{"dst": "0.0.0.0/0"}]
            _add_routes(ns, ifname, routes, gateway)
            if conf.get("hairpinMode"):
                _hairpin(att.host_ifname)
        except BaseException:
            _detach(conf, netns)
            raise
    return _result(conf, netns, ifname, att.mac, addr, gateway, routes)


def _detach(conf: dict, netns: str) -> None:
    from shared.schemas.datapath import DetachReply, DetachRequest

    try:
        _bus(conf, "detach", DetachRequest(container=netns), DetachReply)
    except CniError as exc:
        if exc.code != UNKNOWN_CONTAINER:  # not attached (any more): nothing to undo
            raise


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
    from shared.netlink import IPRoute

    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=host_ifname)[0]
        ipr.brport("set", index=index, hairpin_mode=1)


def cmd_del(conf: dict) -> None:
    """Detach through the datapath (which releases the address). A namespace that is gone
    is fine: the datapath forgets a recorded container whose namespace vanished."""
    _env("CNI_CONTAINERID")
    netns = _env("CNI_NETNS", required=False)
    if netns:
        _detach(conf, netns)


def cmd_check(conf: dict) -> None:
    from shared.netns import NetnsError as DatapathError, open_namespace

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
