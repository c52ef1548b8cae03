#!/bin/sh
# The weave container's main in the DaemonSet, as Weave Net's prog/weave-kube/launch.sh:
# the peers are every Node's address from the API server (`weave kube-peers list`, unless
# KUBE_PEERS names them), IPALLOC_INIT defaults to consensus=<their number>, stored IPAM
# data is dropped if another node reclaimed our peer meanwhile, and `weave kube-peers run`
# keeps the peers current, reclaims deleted nodes' space and answers the readiness probe
# (GET 127.0.0.1:6784/status/kube-peers) beside `weave launch --foreground`.
set -eu
: "${IPALLOC_RANGE:=10.32.0.0/12}" "${CONN_LIMIT:=200}" "${WEAVE_STATE_DIR:=/weavedb}"
export WEAVE_STATE_DIR
NODE="${HOSTNAME:-$(hostname)}"

if [ -z "${KUBE_PEERS:-}" ]; then
  if ! KUBE_PEERS=$(weave --state-dir "$WEAVE_STATE_DIR" kube-peers list); then
    echo "Failed to get peers" >&2
    exit 1
  fi
fi
peer_count() { echo $#; }
# shellcheck disable=SC2086
if [ -z "${IPALLOC_INIT:-}" ]; then IPALLOC_INIT="consensus=$(peer_count $KUBE_PEERS)"; fi

# IPAM data of an earlier run whose peer was since reclaimed by another node (no longer
# in the weave-net ConfigMap's list) would clash with the ring that took its space over.
if [ -f "$WEAVE_STATE_DIR/ipam.db" ] && [ -f "$WEAVE_STATE_DIR/peer-reclaim" ]; then
  if weave --state-dir "$WEAVE_STATE_DIR" kube-peers check-peer-new; then
    echo "Peer not in list; removing persisted data" >&2
    rm -f "$WEAVE_STATE_DIR/ipam.db" "$WEAVE_STATE_DIR/ipam.db-wal" "$WEAVE_STATE_DIR/ipam.db-shm"
  fi
fi
mkdir -p "$WEAVE_STATE_DIR" && touch "$WEAVE_STATE_DIR/peer-reclaim"

# kube-peers waits for this host's stack to write launch.json and start its bus.
( while :; do weave --state-dir "$WEAVE_STATE_DIR" kube-peers run --node-name "$NODE" || true; sleep 5; done ) &

set -- --state-dir "$WEAVE_STATE_DIR" launch --foreground \
  --nickname "$NODE" --ipalloc-range "$IPALLOC_RANGE" --ipalloc-init "$IPALLOC_INIT" --conn-limit "$CONN_LIMIT" \
  --no-dns
if [ -n "${WEAVE_NO_FASTDP:-}" ]; then set -- "$@" --datapath sleeve; fi
# (not a Weave Net variable) the kernel merges the stack's identical pages, if the node runs ksmd
if [ -n "${WEAVE_MERGE_PAGES:-}" ]; then set -- "$@" --merge-pages; fi
if [ -n "${WEAVE_OTLP_ENDPOINT:-}" ]; then set -- "$@" --otlp-endpoint "$WEAVE_OTLP_ENDPOINT"; fi
# WEAVE_PASSWORD is read from the environment by `weave launch`.
# shellcheck disable=SC2086
exec weave "$@" $KUBE_PEERS
