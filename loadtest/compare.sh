#!/usr/bin/env bash
# Anomos against real BitTorrent, in one run on this machine, same file:
#   (a) Debian's BitTorrent clients, seed -> download on loopback
#       (libtorrent and aria2c, every pair; loadtest/bt_pair.py),
#   (b) a plain TLS stream between two of our processes, and one circuit
#       with 2 relays between the same two processes (anomos-loadtest circuit),
#   (c) `anomos get` from one seeder through circuits of exactly 1, 2 and 3
#       relays, and from two seeders with 2 relays (scripts/demo.sh),
# then prints MiB/s and the ratio of each to the best pair of (a).
#
# Usage: loadtest/compare.sh [MIB (default 256)] [OUT_DIR (default a temp dir)]
set -euo pipefail
cd "$(dirname "$0")/.."
MIB=${1:-256}
OUT=${2:-$(mktemp -d /tmp/anomos-compare.XXXXXX)}
mkdir -p "$OUT"

if ! dpkg -s aria2 python3-libtorrent pkg-config libssl-dev >/dev/null 2>&1; then
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq aria2 python3-libtorrent pkg-config libssl-dev
fi
cargo build --release --locked -q -p tracker -p peer -p loadtest
BIN=${CARGO_TARGET_DIR:-target}/release
load() { cut -d' ' -f1-3 /proc/loadavg; }

echo "== load average before: $(load)"
FILE="$OUT/file.bin"
head -c "$((MIB * 1048576))" /dev/urandom >"$FILE"

echo "== (a) BitTorrent pairs, ${MIB} MiB"
/usr/bin/python3 loadtest/bt_pair.py "$FILE" --json "$OUT/bt.json"
rm -f "$FILE"

echo "== (b) plain TLS and one 2-relay circuit between two of our processes"
"$BIN/anomos-loadtest" circuit --size "$MIB" --circuits 20 --idle-circuits 20 \
  --json "$OUT/circuit.json" >"$OUT/circuit.txt"

echo "== (c) anomos get through circuits"
for r in 1 2 3; do
  SEEDERS=1 CIRCUIT_RELAYS=$r JSON="$OUT/get-1seed-${r}relays.json" \
    scripts/demo.sh "$MIB" 6 >"$OUT/get-1seed-${r}relays.txt"
done
SEEDERS=2 CIRCUIT_RELAYS=2 JSON="$OUT/get-2seeds-2relays.json" \
  scripts/demo.sh "$MIB" 6 >"$OUT/get-2seeds-2relays.txt"
echo "== load average after: $(load)"

/usr/bin/python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
# Each row: (label, MiB/s from the downloader's start, MiB/s from its first
# byte of data). Start-up (tracker announce, connecting, circuit set-up)
# weighs a lot on a file that moves in a second or two, so both are shown,
# each against the best BitTorrent pair by the same measure.
bt = json.load(open(os.path.join(out, "bt.json")))
rows = [("bittorrent " + r["pair"], r["mib_per_s"], r["mib_per_s_from_first_byte"]) for r in bt]
c = json.load(open(os.path.join(out, "circuit.json")))
rows.append(("plain TLS, our processes", c["plain"]["mib_per_sec"], None))
rows.append(("one circuit, %d relays (stream)" % c["circuit_relays"], c["circuit"]["mib_per_sec"], None))
for name, label in [("get-1seed-1relays", "anomos get, 1 seeder, 1 relay"),
                    ("get-1seed-2relays", "anomos get, 1 seeder, 2 relays"),
                    ("get-1seed-3relays", "anomos get, 1 seeder, 3 relays"),
                    ("get-2seeds-2relays", "anomos get, 2 seeders, 2 relays")]:
    g = json.load(open(os.path.join(out, name + ".json")))
    rows.append((label, g["mib_per_s"], g.get("mib_per_s_from_first_block")))
best_start = max(bt, key=lambda r: r["mib_per_s"])
best_first = max(bt, key=lambda r: r["mib_per_s_from_first_byte"])
bs, bf = best_start["mib_per_s"], best_first["mib_per_s_from_first_byte"]
fmt = lambda v, d: ("%10.1f %8.2f" % (v, v / d)) if v else "%10s %8s" % ("-", "-")
print()
print("%-36s %19s %19s" % ("transfer (same file, same run)", "from start", "from first byte"))
print("%-36s %10s %8s %10s %8s" % ("", "MiB/s", "÷ best", "MiB/s", "÷ best"))
for label, v, f in rows:
    print("%-36s %s %s" % (label, fmt(v, bs), fmt(f, bf)))
print("\nbest BitTorrent pair from start: %s (%.1f MiB/s); from first byte: %s (%.1f MiB/s)"
      % (best_start["pair"], bs, best_first["pair"], bf))
print("every download verified (cmp); plain TLS and the circuit stream are memory to memory")
print("\nCPU per byte of `anomos get` (ns/B, whole run of each process role):")
for name in ["get-1seed-1relays", "get-1seed-2relays", "get-1seed-3relays", "get-2seeds-2relays"]:
    g = json.load(open(os.path.join(out, name + ".json")))
    cpu, b = g.get("cpu_seconds"), g["mib"] * 1048576
    if cpu:
        print("  %-20s downloader %.1f  seeders %.1f  relays %.1f  all %.1f" % (
            name, cpu["downloader"] * 1e9 / b, cpu["seeders"] * 1e9 / b,
            cpu["relays"] * 1e9 / b, sum(cpu.values()) * 1e9 / b))
json.dump({"rows": [{"transfer": l, "mib_per_s": v, "ratio_to_best_bt": v / bs,
                     "mib_per_s_from_first_byte": f,
                     "ratio_to_best_bt_from_first_byte": (f / bf) if f else None}
                    for l, v, f in rows],
           "best_bt_from_start": best_start, "best_bt_from_first_byte": best_first},
          open(os.path.join(out, "compare.json"), "w"), indent=2)
PY
echo "raw outputs in $OUT"
