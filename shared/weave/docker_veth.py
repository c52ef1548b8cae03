"""Names of a Docker plugin endpoint's veth, as Weave 2.8's plugin gives them
(plugin/net/driver.go vethPair): `vethwl<id>` on the weave bridge, `vethwg<id>` for
the end Docker moves into the container, `<id>` the first 9 characters of Docker's
endpoint id (IFNAMSIZ 16, less "vethwl" and the NUL). The datapath makes the pair; the
plugin names the guest end to Docker at Join: both use this one rule."""
from __future__ import annotations

HOST_PREFIX = "vethwl"
GUEST_PREFIX = "vethwg"
ID_CHARS = 16 - 1 - len(HOST_PREFIX)


def veth_names(endpoint_id: str) -> tuple[str, str]:
    """(host end, guest end); ValueError for something that is not an endpoint id."""
    if len(endpoint_id) < ID_CHARS or not endpoint_id.isalnum():
        raise ValueError(f"endpoint id {endpoint_id!r} is not a Docker endpoint id")
    short = endpoint_id[:ID_CHARS]
    return HOST_PREFIX + short, GUEST_PREFIX + short
