#!/usr/bin/env bash
# Install the Debian packages the stack, the tests and the demo need, but only
# those that are missing, so a second run costs nothing. Needs root. nodejs and npm
# build the Scope page (make web); chromium is the browser its tests drive. docker.io
# (dockerd 20.10), busybox-static and mmdebstrap run and build the testbed's Docker
# engines and images (weave testbed up --docker); installing docker.io never starts a
# dockerd on this machine (a policy-rc.d that denies is in place during the install).
set -euo pipefail
declare -A want=(
  [ip]=iproute2 [iptables]=iptables [ipset]=ipset [iperf3]=iperf3
  [ethtool]=ethtool [dig]=dnsutils [tcpdump]=tcpdump [pkill]=procps
  [bridge]=iproute2 [ping]=iputils-ping [dnsperf]=dnsperf
  [node]=nodejs [npm]=npm [chromium]=chromium [nsenter]=util-linux
  [dockerd]=docker.io [busybox]=busybox-static [mmdebstrap]=mmdebstrap
)
missing=()
for cmd in "${!want[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${want[$cmd]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "install-deps: need root to install: ${missing[*]}" >&2; exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${missing[@]}" | sort -u) >/dev/null
fi
