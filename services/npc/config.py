"""Settings of the npc service, one documented class with a profile per use.

`production` keeps Weave's and mesh's timers where they have them; `test` shortens the
slow ones so end-to-end tests see repairs and gossip within a second or two. The
environment is read here only (STYLE.md 11):
    WEAVE_NPC_IPTABLES   nft | legacy   force the iptables backend (default: detect)
    WEAVE_NPC_KUBE_API   URL            watch this API server (default: in-cluster
                                        KUBERNETES_SERVICE_HOST/PORT if set, else none)
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace

from .apply import Backend, EnforcerConfig
from .chains import NFLOG_GROUP

STORE_FILE = "npc-store.json"  # the gossiped policy store and our own pods, in the state dir


@dataclass(frozen=True)
class NpcServiceConfig:
    resync_interval_s: float = 30.0    # re-read the kernel; hand-made damage is repaired within this
    retry_initial_s: float = 0.2       # first wait after a failed apply; doubles per failure
    retry_max_s: float = 10.0          # cap of that wait: a broken iptables is retried forever
    gossip_interval_s: float = 30.0    # mesh's gossip interval: full store to random neighbours
    persist_delay_s: float = 0.5       # coalesce store writes to disk
    nflog_group: int = int(NFLOG_GROUP)
    allow_mcast: bool = True           # weave-npc --allow-mcast
    backend: Backend | None = None     # None: detect (apply.detect_backend)
    kube_api: str | None = None        # API server URL; None: no Kubernetes source
    kube_token_file: str = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    kube_ca_file: str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
    kube_resync_s: float = 300.0       # relist this often even while watches are healthy

    @property
    def enforcer(self) -> EnforcerConfig:
        return EnforcerConfig(self.resync_interval_s, self.retry_initial_s, self.retry_max_s)

    @classmethod
    def for_profile(cls, profile: str, environ: Mapping[str, str] | None = None) -> "NpcServiceConfig":
        env = os.environ if environ is None else environ
        config = cls()
        if profile == "test":
            config = replace(config, resync_interval_s=1.0, retry_initial_s=0.1, retry_max_s=1.0,
                             gossip_interval_s=2.0, persist_delay_s=0.1, kube_resync_s=30.0)
        backend = env.get("WEAVE_NPC_IPTABLES")
        if backend:
            config = replace(config, backend=Backend(backend))
        api = env.get("WEAVE_NPC_KUBE_API")
        if not api and env.get("KUBERNETES_SERVICE_HOST"):
            api = f"https://{env['KUBERNETES_SERVICE_HOST']}:{env.get('KUBERNETES_SERVICE_PORT', '443')}"
        return replace(config, kube_api=api or None)
