#!/bin/bash
# Make the tracker's TLS key and self-signed certificate, compute its pin,
# and write what kustomization.yaml turns into the anomos-tracker-tls Secret
# and the anomos-peer-config ConfigMap:
#
#   OUT_DIR/tls.key  OUT_DIR/tls.crt  OUT_DIR/tracker.pin  OUT_DIR/peer.toml
#
# Usage: make-tracker-tls.sh [TRACKER_URL [OUT_DIR]]
#   TRACKER_URL  what in-cluster peers announce to
#                (default https://anomos-tracker.anomos.svc:8443)
#   OUT_DIR      default: generated/ beside this script
#
# An existing key is kept (the pin is the SHA-256 of the public key, SPKI
# DER, so keeping the key keeps every .atorrent's pin valid); the
# certificate is re-made around it. The pin computed here is the one
# `anomos-tracker pin --tls-cert tls.crt --tls-key tls.key` prints
# (deploy/check.sh verifies that they agree).
set -euo pipefail

url=${1:-https://anomos-tracker.anomos.svc:8443}
out=${2:-$(dirname "$0")/generated}

[[ $url == https://* && $url != *[\"\\[:space:][:cntrl:]]* ]] ||
  { echo "TRACKER_URL must be https://host[:port]" >&2; exit 1; }
host=${url#https://}
host=${host%%/*}
host=${host%:*}

mkdir -p "$out"
umask 077
if [[ ! -s $out/tls.key ]]; then
  openssl genpkey -algorithm ed25519 -out "$out/tls.key.tmp"
  mv "$out/tls.key.tmp" "$out/tls.key"
fi
openssl req -x509 -new -key "$out/tls.key" -out "$out/tls.crt.tmp" \
  -subj "/CN=anomos tracker" -days 3650 \
  -addext "subjectAltName=DNS:$host" 2>/dev/null
mv "$out/tls.crt.tmp" "$out/tls.crt"

pin=$(openssl x509 -in "$out/tls.crt" -pubkey -noout |
  openssl pkey -pubin -outform DER | sha256sum | cut -d' ' -f1)
[[ $pin =~ ^[0-9a-f]{64}$ ]] || { echo "could not compute the pin" >&2; exit 1; }

umask 022
printf '%s\n' "$pin" >"$out/tracker.pin"
printf '# Written by make-tracker-tls.sh: how peers reach and trust the tracker.\ntracker = "%s"\ntracker_pin = "%s"\n' \
  "$url" "$pin" >"$out/peer.toml"
echo "tracker pin $pin"
