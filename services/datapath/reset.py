"""`weave-datapath reset`: remove what the datapath made on this host, as Weave's
`weave reset` does for weaver: the fastpath's VXLAN device, the `weave` bridge and its
veth ports, and weaver's WEAVE / WEAVE-EXPOSE chains and jumps. Run by the CLI's
`weave reset` (after the stack stopped) through this entry point, so the CLI never
imports the datapath. Prints the devices removed, one line."""
from __future__ import annotations

import sys

from services.datapath.bridge import destroy_bridge
from services.datapath.fastpath import destroy_device
from services.datapath.host_iptables import HostIptables


def reset() -> list[str]:
    removed = ["vxlan-6784"] if destroy_device("vethwe-bridge") else []
    removed += destroy_bridge(None)
    try:
        HostIptables().remove()
    except OSError:  # no iptables on this host: nothing of ours there either
        pass
    return removed


def main(argv: list[str]) -> int:
    if argv:
        sys.stderr.write(f"weave-datapath reset: unexpected argument {argv[0]!r}\n")
        return 2
    print(" ".join(reset()))
    return 0
