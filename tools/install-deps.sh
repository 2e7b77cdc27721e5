#!/usr/bin/env bash
# install-deps.sh - installs the Debian 12 packages twind needs to build, run
# and test, when they are missing. Needs root (apt-get); says so otherwise.
#
#   tools/install-deps.sh            build + run + test packages
#   tools/install-deps.sh --bench    also the benchmark tools: wrk, and the
#                                    NATS and MQTT brokers and client libraries
#                                    twin-bench measures its nng references with
set -euo pipefail

pkgs=(
  build-essential cmake pkg-config git ca-certificates
  libmicrohttpd-dev libnng-dev libmbedtls-dev libjansson-dev libsqlite3-dev
  libsodium-dev libgnutls28-dev libcmocka-dev libcurl4-gnutls-dev
  libgpiod-dev libasound2-dev
  curl openssl gnutls-bin python3 sqlite3 procps
)
[[ "${1:-}" == "--bench" ]] && pkgs+=(wrk nats-server mosquitto libnats-dev libmosquitto-dev)
command -v node >/dev/null 2>&1 || pkgs+=(nodejs)
command -v npm >/dev/null 2>&1 || pkgs+=(npm)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ $(id -u) -ne 0 ]]; then
  echo "install-deps: these Debian packages are missing: ${missing[*]}" >&2
  echo "install-deps: run as root (or: sudo apt-get install -y ${missing[*]})" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
