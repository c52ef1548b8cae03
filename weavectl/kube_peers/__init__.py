"""kube-peers: what Weave Net's Kubernetes add-on does beside the router (its kube-utils),
for a weave-py stack in a DaemonSet pod.

- peers from the API: every Node's address (`weave kube-peers list`, which the launch
  script passes to `weave launch` and counts for --ipalloc-init consensus=N), then kept
  current from a watch of the Nodes (gossip connect/forget over the bus);
- reclaim: the space of peers whose Node was deleted is taken over (ipam rmpeer) by one
  node at a time, under Weave's annotations of the kube-system/weave-net ConfigMap;
- readiness: ready when every other Node's peer is in our mesh and IPAM is ready,
  served as the `kube-peers` section of `weave status` and GET /status/kube-peers
  (503 until ready) on the router's API port, the DaemonSet's readiness probe.

Modules: `nodes` (Node list -> targets), `peer_list` (the annotations), `reclaim` (the
election, a state machine), `readiness`, all sans-I/O; `daemon` is the asyncio shell
run by `weave kube-peers run` (weavectl/commands/kube_peers.py).
"""
from __future__ import annotations

from dataclasses import dataclass

from shared.kube import ApiConfig


@dataclass(frozen=True)
class KubePeersConfig:
    node_name: str                        # this Node (HOSTNAME = spec.nodeName in the DaemonSet)
    api: ApiConfig                        # the API server, as the pod's service account
    reclaim_delay_max_s: float = 5.0      # Weave: a random 0-5 s after a Node delete, so nodes do not all
                                          # race for the ConfigMap at once
    retry_period_s: float = 2.0           # Weave's LoopUpdate period after a 409 (plus up to as much jitter)
    reclaim_interval_s: float = 300.0     # also reclaim this often: a claimer that died mid-way left work
                                          # (Weave waits for the next Node delete)
    readiness_interval_s: float = 2.0     # ask the gossip and ipam services this often
    resync_s: float = 300.0               # list the Nodes again this often, watch or not
    prime_wait_s: float = 60.0            # one `ipam prime` waits this long for a ring, then asks again
    set_node_status: bool = True          # NodeNetworkUnavailable=False once first ready (kube-utils
                                          # -set-node-status)
