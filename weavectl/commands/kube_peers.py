"""`weave kube-peers ...`: Weave Net's kube-utils for the DaemonSet's launch script.

    weave kube-peers list             every Node's peer address, one a line (launch.sh's
                                      KUBE_PEERS; their count is --ipalloc-init consensus=N)
    weave kube-peers check-peer-new   exit 0 if this host's peer is not in the weave-net
                                      ConfigMap's peer list (another node reclaimed it: its
                                      stored IPAM data must go), 9 if it is (kube-utils'
                                      -check-peer-new codes)
    weave kube-peers run              the daemon: targets from the Node watch, reclaim of
                                      deleted Nodes' peers, readiness (weavectl/kube_peers)
    weave kube-peers status           its `weave status` section; exit 1 if not ready

The API server is WEAVE_KUBE_API or the pod's in-cluster address (`--api` overrides),
with the service account's token and CA (`--token-file`, `--ca-file`).
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from pathlib import Path

from shared import kube, subjects
from shared.bus import BusError
from shared.config import LaunchConfig, state_dir_from_env
from weavectl.launcher import LaunchError

EXIT_IN_LIST = 9  # kube-utils -check-peer-new: "peer name is stored in the annotation"
log = logging.getLogger("weave.kube-peers")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("kube-peers", help="the Kubernetes add-on's peers: list, reclaim, readiness")
    verbs = p.add_subparsers(dest="kube_peers_verb", metavar="VERB", required=True)
    v = verbs.add_parser("list", help="every Node's peer address, one a line")
    _api_args(v)
    v.set_defaults(handler=cmd_list)
    v = verbs.add_parser("check-peer-new", help="exit 0 if this peer is not in the weave-net ConfigMap's list, 9 if it is")
    _api_args(v)
    v.add_argument("--peer-name", help="default: this host's (launch.json in the state dir)")
    v.set_defaults(handler=cmd_check_peer_new)
    v = verbs.add_parser("run", help="keep the router's peers current, reclaim deleted nodes' space, serve readiness")
    _api_args(v)
    v.add_argument("--node-name", default=os.environ.get("HOSTNAME") or socket.gethostname(),
                   help="this Kubernetes node (default $HOSTNAME, spec.nodeName in the DaemonSet)")
    v.add_argument("--reclaim-delay", type=float, default=5.0, metavar="S",
                   help="reclaim a deleted node's peer after a random 0..S seconds (default 5, as Weave)")
    v.add_argument("--retry-period", type=float, default=2.0, metavar="S",
                   help="after a ConfigMap update conflict, retry after S..2S seconds (default 2, as Weave)")
    v.add_argument("--readiness-interval", type=float, default=2.0, metavar="S", help="default 2")
    v.add_argument("--no-node-status", action="store_true", help="do not set the Node's NetworkUnavailable=False")
    v.set_defaults(handler=cmd_run)
    v = verbs.add_parser("status", help="the kube-peers section of weave status; exit 1 if not ready")
    v.set_defaults(handler=cmd_status)


def _api_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--api", default=None, help="API server URL (default WEAVE_KUBE_API or the in-cluster one)")
    p.add_argument("--token-file", default=f"{kube.SERVICE_ACCOUNT}/token")
    p.add_argument("--ca-file", default=f"{kube.SERVICE_ACCOUNT}/ca.crt")


def _api(args: argparse.Namespace) -> kube.ApiConfig:
    found = kube.ApiConfig.from_env()
    url = args.api or (found.url if found else None)
    if not url:
        raise LaunchError("no Kubernetes API server: not in a pod (no KUBERNETES_SERVICE_HOST)",
                          "pass --api URL or set WEAVE_KUBE_API")
    return kube.ApiConfig(url, args.token_file, args.ca_file)


def _state_dir(args: argparse.Namespace) -> Path:
    return args.state_dir or state_dir_from_env()


def cmd_list(args: argparse.Namespace) -> int:
    from lightkube.resources.core_v1 import Node

    from weavectl.kube_peers.nodes import node_info, peer_addresses

    async def nodes():
        client = kube.make_client(_api(args))
        try:
            return [i for n in [n.to_dict() async for n in client.list(Node)] if (i := node_info(n))]
        finally:
            await client.close()

    for address in peer_addresses(_run_api(nodes())):
        print(address)
    return 0


def cmd_check_peer_new(args: argparse.Namespace) -> int:
    from lightkube.resources.core_v1 import ConfigMap

    from weavectl.kube_peers import peer_list as pl

    peer = args.peer_name
    if not peer:
        try:
            peer = LaunchConfig.load(_state_dir(args)).name
        except (OSError, ValueError):
            peer = None
    if not peer:
        return 0  # no previous run here: nothing stored to discard

    async def annotations():
        client = kube.make_client(_api(args))
        try:
            cm = await client.get(ConfigMap, pl.CONFIGMAP_NAME, namespace=pl.CONFIGMAP_NAMESPACE)
            return cm.metadata.annotations or {}
        except Exception as exc:
            if kube.is_not_found(exc):
                return {}
            raise
        finally:
            await client.close()

    return EXIT_IN_LIST if pl.contains(_run_api(annotations()), peer.lower()) else 0


def cmd_run(args: argparse.Namespace) -> int:
    from shared.service import setup_logging
    from weavectl.kube_peers import KubePeersConfig

    setup_logging("kube-peers")
    config = KubePeersConfig(node_name=args.node_name, api=_api(args), reclaim_delay_max_s=args.reclaim_delay,
                             retry_period_s=args.retry_period, readiness_interval_s=args.readiness_interval,
                             set_node_status=not args.no_node_status)
    asyncio.run(_run(config, _state_dir(args)))
    return 0


async def _run(config, state_dir: Path) -> None:
    from shared.nats_bus import NatsBus
    from weavectl.kube_peers.daemon import KubePeers

    launch = await _launch_config(state_dir)
    while True:  # the bus comes up with the stack: wait for it
        try:
            bus = await NatsBus.connect(launch.bus_url, launch.bus_token(), subjects.KUBE_PEERS, timeout=5.0)
            break
        except BusError as exc:
            log.info("waiting for this host's bus: %s", exc.description)
            await asyncio.sleep(1.0)
    client = kube.make_client(config.api, field_manager="weave-kube-peers")
    app = KubePeers(config, launch, bus, client)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await app.start()
    await stop.wait()
    await app.stop()
    await client.close()
    await bus.close()


async def _launch_config(state_dir: Path) -> LaunchConfig:
    """This host's launch.json: written by `weave launch` (maybe started just now)."""
    while True:
        try:
            launch = LaunchConfig.load(state_dir)
            if launch.name:
                return launch
        except (OSError, ValueError):
            pass
        log.info("waiting for %s/launch.json", state_dir)
        await asyncio.sleep(1.0)


def cmd_status(args: argparse.Namespace) -> int:
    from shared.schemas.http import HttpReply, HttpRequest
    from weavectl.launcher import bus_request

    try:
        reply = bus_request(_state_dir(args), subjects.request(subjects.KUBE_PEERS, "http"),
                            HttpRequest(method="GET", path="/status/kube-peers", query={}, headers={}, body=b""),
                            HttpReply, timeout=5.0)
    except BusError as exc:
        raise LaunchError(exc.description, "is 'weave kube-peers run' running on this host?") from None
    sys.stdout.write(reply.body.decode(errors="replace"))
    return 0 if reply.status == 200 else 1


def _run_api(coro):
    """Run one API call for a CLI verb; API failures become a one-line error."""
    try:
        return asyncio.run(coro)
    except LaunchError:
        raise
    except Exception as exc:
        raise LaunchError(f"Kubernetes API: {type(exc).__name__}: {exc}") from None
