#!/bin/sh
# The weave container's main in the DaemonSet: Weave Net's environment variables ->
# `weave launch --foreground` (the supervisor runs the stack in this container).
set -eu
: "${IPALLOC_RANGE:=10.32.0.0/12}" "${CONN_LIMIT:=200}" "${WEAVE_STATE_DIR:=/weavedb}"
set -- --state-dir "$WEAVE_STATE_DIR" launch --foreground \
  --nickname "${HOSTNAME:-$(hostname)}" --ipalloc-range "$IPALLOC_RANGE" --conn-limit "$CONN_LIMIT" \
  --no-dns
if [ -n "${IPALLOC_INIT:-}" ]; then set -- "$@" --ipalloc-init "$IPALLOC_INIT"; fi
if [ -n "${WEAVE_NO_FASTDP:-}" ]; then set -- "$@" --datapath sleeve; fi
if [ -n "${WEAVE_OTLP_ENDPOINT:-}" ]; then set -- "$@" --otlp-endpoint "$WEAVE_OTLP_ENDPOINT"; fi
# WEAVE_PASSWORD is read from the environment by `weave launch`; KUBE_PEERS lists node IPs.
# shellcheck disable=SC2086
exec weave "$@" ${KUBE_PEERS:-}
