"""`weave setup-cni`: install the weave-net CNI plugin and its network config."""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from weavectl.launcher import LaunchError

CONFLIST = {
    "cniVersion": "1.0.0",
    "name": "weave",
    "plugins": [
        {"name": "weave", "type": "weave-net", "hairpinMode": True},
        {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
    ],
}


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("setup-cni", help="install the weave-net CNI plugin and a conflist")
    p.add_argument("--cni-bin-dir", type=Path, default=Path("/opt/cni/bin"))
    p.add_argument("--cni-conf-dir", type=Path, default=Path("/etc/cni/net.d"))
    p.set_defaults(handler=run)


def plugin_path() -> Path:
    candidate = Path(sys.executable).parent / "weave-net"
    found = candidate if candidate.exists() else shutil.which("weave-net")
    if not found:
        raise LaunchError("the weave-net plugin is not installed", "install the project: pip install -e .")
    return Path(found)


def run(args: argparse.Namespace) -> int:
    target = plugin_path()
    args.cni_bin_dir.mkdir(parents=True, exist_ok=True)
    args.cni_conf_dir.mkdir(parents=True, exist_ok=True)
    for name in ("weave-net", "weave-ipam"):
        link = args.cni_bin_dir / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
    conf = args.cni_conf_dir / "10-weave.conflist"
    conf.write_text(json.dumps(CONFLIST, indent=2) + "\n")
    print(f"installed {args.cni_bin_dir / 'weave-net'} -> {target} and {conf}")
    return 0
