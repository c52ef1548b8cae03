#!/usr/bin/env bash
# Install the Debian packages the stack, the tests and the demo need, but only
# those that are missing, so a second run costs nothing. Needs root. nodejs and npm
# build the Scope page (make web); chromium is the browser its tests drive.
set -euo pipefail
declare -A want=(
  [ip]=iproute2 [iptables]=iptables [ipset]=ipset [iperf3]=iperf3
  [ethtool]=ethtool [dig]=dnsutils [tcpdump]=tcpdump [pkill]=procps
  [bridge]=iproute2 [ping]=iputils-ping [dnsperf]=dnsperf
  [node]=nodejs [npm]=npm [chromium]=chromium [nsenter]=util-linux
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
  apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${missing[@]}" | sort -u) >/dev/null
fi
