#!/bin/bash
# Write the files peers need to trust a tracker: TRACKER.pin (the SHA-256
# SPKI pin, 64 hex digits) and peer.toml (`tracker` and `tracker_pin`, for
# `anomos ... --config peer.toml`). The pin is asked from `anomos-tracker
# pin`, which creates the tracker's self-signed certificate on first use,
# so running this before the tracker starts is how a fresh deployment gets
# its pin without a manual step.
#
# Usage: anomos-peer-config TRACKER_URL OUT_DIR [anomos-tracker options...]
#   e.g. anomos-peer-config https://tracker:8443 /config --data-dir /data
set -euo pipefail

fail() {
  echo "anomos-peer-config: $*" >&2
  exit 1
}

(($# >= 2)) || fail "usage: anomos-peer-config TRACKER_URL OUT_DIR [anomos-tracker options...]"
url=$1
out=$2
shift 2
# The URL ends up inside a TOML string: refuse what would need escaping.
[[ $url == https://* && $url != *[\"\\[:space:][:cntrl:]]* ]] ||
  fail "TRACKER_URL must be https://host[:port] without quotes or spaces"
[[ -d $out ]] || fail "$out is not a directory"

pin=$(anomos-tracker pin "$@") || fail "anomos-tracker pin failed"
[[ $pin =~ ^[0-9a-f]{64}$ ]] || fail "unexpected pin output"

# Readable by the peers (the pin is public); replaced atomically.
umask 022
printf '%s\n' "$pin" >"$out/tracker.pin.tmp"
printf '# Written by anomos-peer-config: how peers reach and trust the tracker.\n''tracker = "%s"\ntracker_pin = "%s"\n' \
  "$url" "$pin" >"$out/peer.toml.tmp"
mv -f "$out/tracker.pin.tmp" "$out/tracker.pin"
mv -f "$out/peer.toml.tmp" "$out/peer.toml"
echo "tracker pin $pin"
