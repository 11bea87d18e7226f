#!/usr/bin/env bash
# The main job on a local default: a whole anonymous circuit with the real
# protocol core. Usage: scripts/demo.sh [RELAYS] [MIB]
set -euo pipefail
cd "$(dirname "$0")/.."
if ! dpkg -s pkg-config libssl-dev >/dev/null 2>&1; then
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq pkg-config libssl-dev
fi
exec cargo run --release --locked -q -p anomos-common --example circuit -- "${1:-3}" "${2:-64}"
